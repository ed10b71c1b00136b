//! Threads that step entities' forests when a window closes.
//!
//! They are started once and kept: starting two threads for every window
//! (as a scoped spawn did) cost about as much CPU as the forests of a quiet
//! window, most of it in the kernel. The calling thread takes a share of
//! the work itself. A panic in one item (a bug) costs that item's result,
//! never the others or the pool.

use std::sync::mpsc::{Receiver, SendError, Sender, channel};

/// One job: a share of the items and what to do to each.
type Job<T> = (Vec<T>, fn(&mut T));

pub struct Pool<T> {
    /// Threads to share a window's work across, the caller included; 0
    /// until first used.
    threads: usize,
    workers: Vec<Worker<T>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self {
            threads: 0,
            workers: Vec::new(),
        }
    }
}

struct Worker<T> {
    jobs: Sender<Job<T>>,
    done: Receiver<Vec<T>>,
}

/// Where one share of the work runs.
enum Share<T> {
    Here(Vec<T>),
    /// On this worker.
    Sent(usize),
}

impl<T: Send + 'static> Pool<T> {
    /// Applies `step` to every item, keeping their order. `step` must
    /// leave an item in a state that says so if it panicked (the pool
    /// catches the panic and carries on).
    pub fn run(&mut self, work: &mut Vec<T>, step: fn(&mut T)) {
        if self.threads == 0 {
            self.threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4);
            self.workers = (1..self.threads).map_while(|_| Worker::start()).collect();
        }
        let chunk = work.len().div_ceil(self.workers.len() + 1).max(1);
        let mut items = std::mem::take(work).into_iter();
        let mut shares = Vec::with_capacity(self.workers.len() + 1);
        // The first share stays here; the others go to a worker each.
        for i in 0usize.. {
            let share: Vec<T> = items.by_ref().take(chunk).collect();
            if share.is_empty() {
                break;
            }
            let worker = i
                .checked_sub(1)
                .and_then(|w| Some(w).zip(self.workers.get(w)));
            shares.push(match worker {
                Some((w, worker)) => match worker.jobs.send((share, step)) {
                    Ok(()) => Share::Sent(w),
                    Err(SendError((share, _))) => Share::Here(share),
                },
                None => Share::Here(share),
            });
        }
        for share in &mut shares {
            if let Share::Here(share) = share {
                share.iter_mut().for_each(|item| caught(item, step));
            }
        }
        let mut gone = Vec::new();
        for share in shares {
            match share {
                Share::Here(share) => work.extend(share),
                // Workers catch panics, so a share only goes missing if
                // its thread was killed outright.
                Share::Sent(w) => match self.workers.get(w).map(|worker| worker.done.recv()) {
                    Some(Ok(share)) => work.extend(share),
                    _ => gone.push(w),
                },
            }
        }
        for w in gone.into_iter().rev() {
            self.workers.remove(w);
        }
    }
}

fn caught<T>(item: &mut T, step: fn(&mut T)) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(item)));
}

impl<T: Send + 'static> Worker<T> {
    fn start() -> Option<Self> {
        let (jobs, job_rx) = channel::<Job<T>>();
        let (done_tx, done) = channel();
        std::thread::Builder::new()
            .name("th-forest".into())
            .spawn(move || {
                for (mut share, step) in job_rx {
                    share.iter_mut().for_each(|item| caught(item, step));
                    if done_tx.send(share).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Self { jobs, done })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_survives_a_panic() {
        let mut pool = Pool::<(u32, Option<u32>)>::default();
        let mut work: Vec<(u32, Option<u32>)> = (0..100).map(|i| (i, None)).collect();
        fn step(item: &mut (u32, Option<u32>)) {
            if item.0 == 42 {
                panic!("a bug in one item");
            }
            item.1 = Some(item.0 * 2);
        }
        pool.run(&mut work, step);
        assert_eq!(work.len(), 100);
        for (i, (n, r)) in work.iter().enumerate() {
            assert_eq!(*n as usize, i);
            assert_eq!(*r, if *n == 42 { None } else { Some(n * 2) });
        }
    }
}
