//! The README's first command: `trailhound demo`, run as a user runs it.
//! It must catch the cryptomining burst and say who, from where, what was
//! launched and what it costs, print nothing but its report (no service
//! logs), and with `--keep-running` leave the services up for the
//! dashboard and `trailhound ask` until Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::trailhound_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_catches_the_burst_and_keeps_running_for_exploring() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stderr = dir.path().join("demo.stderr");
    let mut child = Command::new(trailhound_bin())
        .args(["demo", "--keep-running", "--out"])
        .arg(dir.path().join("demo"))
        .current_dir(dir.path())
        .env_remove("TRAILHOUND_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start trailhound demo");

    // Read the report up to the lines that say where the services are.
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut report = String::new();
    let mut dashboard = None;
    let mut insights = None;
    while insights.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!(
                "the demo printed no way to explore it in 180s:\n{report}\n--- stderr ---\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        if let Some(url) = line.trim().strip_prefix("dashboard") {
            dashboard = Some(url.trim().to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("questions") {
            insights = rest
                .split_whitespace()
                .skip_while(|w| *w != "--insights")
                .nth(1)
                .map(str::to_string);
        }
        report.push_str(&line);
        report.push('\n');
    }

    // The burst, explained: severity, account, principal, IP, instance
    // type and dollars per hour.
    let burst = report
        .split("──────")
        .find(|s| s.contains("p4d.24xlarge"))
        .unwrap_or_else(|| panic!("no incident names the GPU instances:\n{report}"));
    assert!(burst.contains("CRITICAL"), "{burst}");
    assert!(burst.contains("[sandbox]"), "{burst}");
    assert!(burst.contains("principal"), "{burst}");
    assert!(burst.contains("(new IP)"), "{burst}");
    assert!(burst.contains("/hour"), "{burst}");
    assert!(
        report.contains("caught ") && report.contains(" of 5 injected incidents"),
        "{report}"
    );
    // Nothing but the report: the services' logs stay out of the way.
    let logs = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        !logs.contains(" INFO "),
        "service logs in the demo:\n{logs}"
    );

    // The services answer while it keeps running: the dashboard charts
    // the burst's entity with its anomaly marked.
    let field = |name: &str| {
        burst
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in the burst:\n{burst}"))
    };
    let account = field("Account:");
    let account_id = account
        .rsplit_once('(')
        .map(|(_, id)| id.trim_end_matches(')').to_string())
        .unwrap_or_else(|| panic!("no account id in {account:?}"));
    let region = field("Region:");
    let dashboard = dashboard.expect("dashboard URL");
    // The first thing a person opens lists the burst first (most severe).
    let front = reqwest::get(&dashboard)
        .await
        .expect("dashboard")
        .text()
        .await
        .expect("dashboard page");
    let first_row = front
        .split("class=\"anomaly-row\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no incidents on the dashboard:\n{front}"));
    assert!(first_row.contains("critical"), "{first_row}");
    assert!(first_row.contains(&account_id), "{first_row}");
    let url =
        format!("{dashboard}?account={account_id}&region={region}&detector=ec2-run-instances");
    let page = reqwest::get(&url)
        .await
        .expect("dashboard")
        .text()
        .await
        .expect("dashboard page");
    assert!(page.contains("id=\"usage-chart\""), "{page}");
    assert!(
        page.contains(&format!(
            "Usage: {account_id} in {region} (ec2-run-instances)"
        )),
        "{page}"
    );
    assert!(
        page.contains("class=\"anomaly\""),
        "no anomaly marked: {page}"
    );
    let insights = insights.expect("insights endpoint");
    let ask = Command::new(trailhound_bin())
        .args([
            "ask",
            "--insights",
            &insights,
            "What did anomalies cost this week?",
        ])
        .output()
        .expect("trailhound ask");
    let answer = String::from_utf8_lossy(&ask.stdout);
    assert!(ask.status.success(), "{answer}");
    assert!(answer.contains("platform-experiments"), "{answer}");

    // Ctrl-C stops it cleanly.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let stop = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > stop {
            let _ = child.kill();
            panic!("the demo did not stop within 20s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
