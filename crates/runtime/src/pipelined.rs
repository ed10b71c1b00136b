//! One pipeline hop as a long-lived gRPC stream with several requests in
//! flight, in order.
//!
//! A unary hop waits for each batch's answer before it sends the next, so
//! the services on either side take turns. Over one bidirectional stream
//! the server handles requests in the order sent and answers in that
//! order, so up to `window` batches can be on the way while the server
//! works: the processes overlap, and the order a batch was submitted in is
//! still the order it is applied in.
//!
//! The driver owns the hop's retries: when the stream breaks (the server
//! restarts, a connection drops), it opens a new one with backoff and
//! sends every unanswered request again, oldest first, so a retry never
//! reorders batches. A request the server may already have applied before
//! the break is therefore sent twice; the servers recognise a batch they
//! have acknowledged (detect's write-ahead log keeps batch fingerprints).
//! A refusal that is not retryable (INVALID_ARGUMENT) fails that request
//! alone; the ones behind it are sent again on a new stream. A caller that
//! stops waiting (its patience ran out) withdraws its request unless it is
//! already on the way.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// The server's answers, in the order of the requests.
pub type Answers<Resp> = Pin<Box<dyn Stream<Item = Result<Resp, Status>> + Send>>;

/// Opens a stream: given the requests to send, the answers.
pub type Open<Req, Resp> = Box<
    dyn Fn(
            mpsc::Receiver<Req>,
        ) -> Pin<Box<dyn Future<Output = Result<Answers<Resp>, Status>> + Send>>
        + Send
        + Sync,
>;

/// Opens streams with a generated client's bidirectional method, e.g.
/// `open_with(client, |mut c, r| async move { c.observe_stream(r).await })`.
pub fn open_with<Req, Resp, C, F, Fut>(client: C, call: F) -> Open<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    C: Clone + Send + Sync + 'static,
    F: Fn(C, tokio_stream::wrappers::ReceiverStream<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<Resp>>, Status>> + Send + 'static,
{
    Box::new(move |requests| {
        let opening = call(
            client.clone(),
            tokio_stream::wrappers::ReceiverStream::new(requests),
        );
        Box::pin(async move { Ok(Box::pin(opening.await?.into_inner()) as Answers<Resp>) })
    })
}

struct Job<Req, Resp> {
    req: Req,
    done: oneshot::Sender<Result<Resp, Status>>,
}

/// The client side of a pipelined hop (see the module doc).
pub struct Pipelined<Req, Resp> {
    jobs: mpsc::UnboundedSender<Job<Req, Resp>>,
}

impl<Req, Resp> Clone for Pipelined<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<Req, Resp> Pipelined<Req, Resp>
where
    Req: Clone + Send + 'static,
    Resp: Send + 'static,
{
    /// Starts the driver on the current runtime; it ends when every
    /// handle is dropped. `window`: requests sent and not yet answered;
    /// more wait in the driver's queue, which the callers bound (each
    /// waits for its answer).
    pub fn new(name: &'static str, window: usize, open: Open<Req, Resp>) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(name, window.max(1), open, rx));
        Self { jobs }
    }

    /// Queues `req` behind every request queued before it, now, and
    /// returns its answer to wait for: the order of `enqueue` calls is the
    /// order the server applies them in.
    pub fn enqueue(&self, req: Req) -> impl Future<Output = Result<Resp, Status>> + Send + 'static {
        let (done, answer) = oneshot::channel();
        let queued = self.jobs.send(Job { req, done }).is_ok();
        async move {
            if !queued {
                return Err(Status::unavailable("the hop's driver has stopped"));
            }
            answer
                .await
                .map_err(|_| Status::unavailable("the hop's driver has stopped"))?
        }
    }

    /// [`Pipelined::enqueue`] and wait.
    pub async fn submit(&self, req: Req) -> Result<Resp, Status> {
        self.enqueue(req).await
    }
}

async fn drive<Req, Resp>(
    name: &'static str,
    window: usize,
    open: Open<Req, Resp>,
    mut jobs: mpsc::UnboundedReceiver<Job<Req, Resp>>,
) where
    Req: Clone + Send + 'static,
    Resp: Send + 'static,
{
    // Sent (or to be sent again) and not answered, oldest first.
    let mut pending: VecDeque<Job<Req, Resp>> = VecDeque::new();
    let mut backoff = crate::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut closed = false;
    loop {
        // Nothing to do: wait for work (or the end).
        if pending.is_empty() {
            if closed {
                return;
            }
            match jobs.recv().await {
                Some(j) => pending.push_back(j),
                None => return,
            }
        }
        // Callers that gave up are not sent again.
        pending.retain(|j| !j.done.is_closed());
        if pending.is_empty() {
            continue;
        }
        let (requests, rx) = mpsc::channel(window + 1);
        let mut answers = match open(rx).await {
            Ok(a) => a,
            Err(s) => {
                let wait = backoff.fail();
                tracing::warn!(hop = name, code = ?s.code(), message = s.message(), ?wait, "downstream unavailable, retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let again: Vec<Req> = pending.iter().map(|j| j.req.clone()).collect();
        for req in again {
            if requests.send(req).await.is_err() {
                break;
            }
        }
        // Runs until the stream breaks; then the unanswered go again.
        loop {
            tokio::select! {
                biased;
                answer = answers.next() => match answer {
                    Some(Ok(resp)) => {
                        backoff.reset();
                        if let Some(j) = pending.pop_front() {
                            let _ = j.done.send(Ok(resp));
                        }
                    }
                    Some(Err(s)) if crate::status::is_retryable(s.code()) => {
                        let wait = backoff.fail();
                        tracing::warn!(hop = name, code = ?s.code(), message = s.message(), ?wait, "stream broke: sending the unanswered again, retrying");
                        tokio::time::sleep(wait).await;
                        break;
                    }
                    Some(Err(s)) => {
                        // The oldest unanswered request was refused.
                        if let Some(j) = pending.pop_front() {
                            let _ = j.done.send(Err(s));
                        }
                        break;
                    }
                    None => {
                        if !pending.is_empty() {
                            tokio::time::sleep(backoff.fail()).await;
                        }
                        break;
                    }
                },
                job = jobs.recv(), if !closed && pending.len() < window => match job {
                    Some(j) => {
                        // A closed stream shows in `answers` next.
                        let _ = requests.send(j.req.clone()).await;
                        pending.push_back(j);
                    }
                    None => closed = true,
                },
            }
            if closed && pending.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is its failure report
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A server that applies requests in order, remembering what it
    /// applied; `fail_after(n)` breaks the stream after the n-th answer
    /// (once), `refuse(v)` answers INVALID_ARGUMENT for value v.
    fn server(
        applied: Arc<Mutex<Vec<u32>>>,
        break_after: Option<usize>,
        refuse: Option<u32>,
    ) -> Open<u32, u32> {
        let broke = Arc::new(Mutex::new(false));
        Box::new(move |mut rx: mpsc::Receiver<u32>| {
            let applied = applied.clone();
            let broke = broke.clone();
            Box::pin(async move {
                let (tx, out) = mpsc::channel(16);
                tokio::spawn(async move {
                    let mut answered = 0;
                    while let Some(v) = rx.recv().await {
                        // Slow enough that several are in flight.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        if Some(v) == refuse {
                            let _ = tx.send(Err(Status::invalid_argument("no"))).await;
                            return;
                        }
                        applied.lock().unwrap().push(v);
                        answered += 1;
                        let _ = tx.send(Ok(v * 10)).await;
                        if break_after == Some(answered) && !*broke.lock().unwrap() {
                            *broke.lock().unwrap() = true;
                            let _ = tx.send(Err(Status::unavailable("restarting"))).await;
                            return;
                        }
                    }
                });
                Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out)) as Answers<u32>)
            })
        })
    }

    async fn submit_all(p: &Pipelined<u32, u32>, n: u32) -> Vec<Result<u32, Status>> {
        // Queued in order, awaited together.
        let futures: Vec<_> = (0..n).map(|v| p.enqueue(v)).collect();
        futures::future::join_all(futures).await
    }

    #[tokio::test]
    async fn requests_are_applied_and_answered_in_order() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let p = Pipelined::new("test", 4, server(applied.clone(), None, None));
        let answers = submit_all(&p, 50).await;
        let values: Vec<u32> = answers.into_iter().map(|a| a.unwrap()).collect();
        assert_eq!(values, (0..50).map(|v| v * 10).collect::<Vec<_>>());
        assert_eq!(*applied.lock().unwrap(), (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_broken_stream_sends_the_unanswered_again_in_order() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let p = Pipelined::new("test", 4, server(applied.clone(), Some(7), None));
        let answers = submit_all(&p, 30).await;
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        let applied = applied.lock().unwrap().clone();
        // Every request applied, in order; a request in flight when the
        // stream broke may be applied twice (servers dedupe), never out
        // of order.
        let mut seen = Vec::new();
        for v in &applied {
            if seen.last() != Some(v) && !seen.contains(v) {
                assert_eq!(*v as usize, seen.len(), "{applied:?}");
                seen.push(*v);
            }
        }
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_refusal_fails_its_request_alone() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let p = Pipelined::new("test", 4, server(applied.clone(), None, Some(5)));
        let answers = submit_all(&p, 12).await;
        for (v, a) in answers.iter().enumerate() {
            match a {
                Err(s) => {
                    assert_eq!(v, 5);
                    assert_eq!(s.code(), tonic::Code::InvalidArgument);
                }
                Ok(x) => assert_eq!(*x, v as u32 * 10),
            }
        }
        assert!(answers[5].is_err());
        let applied = applied.lock().unwrap().clone();
        assert!(!applied.contains(&5));
        assert_eq!(applied.iter().filter(|v| **v > 5).count(), 6, "{applied:?}");
    }
}
