//! `tvm devnet` as a newcomer runs it: `--once` prints each node's verdict
//! and the weights the test chain accepted, and exits 0; without it the
//! dashboard stays up, and a real headless browser (Debian's `chromium`)
//! shows the nodes and a failing node's reason.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn devnet(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tvm"));
    c.arg("devnet")
        .args(["--dashboard", "127.0.0.1:0", "--block-ms", "250"])
        .args(args);
    c
}

/// The round's note on `uid`'s v5 standing.
fn v5_note(stdout: &str, uid: u16) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("note: v5 uid {uid}: ")))
        .unwrap_or_else(|| panic!("no v5 note for uid {uid}: {stdout}"))
}

/// The table row for `node`, split into its columns' words.
fn row<'a>(out: &'a str, node: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(node))
        .unwrap_or_else(|| panic!("no row for {node} in:\n{out}"))
}

#[test]
fn devnet_once_prints_verdicts_and_the_accepted_weights() {
    let out = devnet(&["--once"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SIMULATED"));
    let expect = [
        ("127.0.0.11", "ACCEPTED (SIMULATED)", "2 points"),
        ("127.0.0.12", "ACCEPTED (SIMULATED)", "1 point"),
        (
            "127.0.0.13",
            "ACCEPTED (SIMULATED)",
            "duplicate of 127.0.0.16",
        ),
        ("127.0.0.18", "ACCEPTED (SIMULATED)", "1 point"),
        // An HGX H200 board: 8 GPUs and 4 linked NVSwitches, 8 × 2 points.
        ("127.0.0.20", "ACCEPTED (SIMULATED)", "16 points"),
        (
            "127.0.0.20",
            "ACCEPTED (SIMULATED)",
            "8 × H200 SXM (G520_0280_895)",
        ),
        (
            "127.0.0.11",
            "ACCEPTED (SIMULATED)",
            "2 × H100 PCIe (1010_0200_882)",
        ),
        ("127.0.0.14", "NO EVIDENCE", "502"),
        (
            "127.0.0.15",
            "REJECTED",
            "failed tls.key, tee.collateral, report_data, spdm.nonce",
        ),
        (
            "127.0.0.16",
            "ACCEPTED (SIMULATED)",
            "duplicate of 127.0.0.13",
        ),
        ("127.0.0.17", "NO EVIDENCE", "cannot reach"),
        // Genuine (simulated) hardware, an image no manifest lists.
        ("127.0.0.19", "REJECTED", "failed measurement"),
    ];
    for (node, verdict, counted) in expect {
        let r = row(&stdout, node);
        assert!(r.contains(verdict) && r.contains(counted), "{node}: {r:?}");
    }
    // Commit-reveal is on (finney's default): committed, then revealed by
    // the chain, then read back by the validator.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("weights committed (block 0x")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("the validator read them back: revealed")),
        "{stdout}"
    );
    // 70 % split 3:17 between the two honest miners; 30 % (v5) to uid 2,
    // whose nodes answer as the toy model does; uid 3's .18 serves another
    // model and earns no v5.
    let accepted = stdout
        .lines()
        .find(|l| l.starts_with("weights the chain revealed and applied"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        accepted.ends_with("uid 0: 1 (0.0 %), uid 2: 26541 (40.5 %), uid 3: 38993 (59.5 %)"),
        "{accepted}"
    );
    // The v5 phase: each answer named, the cheater's failure said.
    let note = |uid: u16| v5_note(&stdout, uid);
    assert!(
        note(2).contains("toy/tvm-toy-1") && !note(2).contains("failed"),
        "{}",
        note(2)
    );
    assert!(note(3).starts_with("note: v5 uid 3: 0.0 ("), "{}", note(3));
    assert!(note(3).contains("failed (last: v5."), "{}", note(3));
    let answers = |node: &str, verdict: &str| {
        stdout
            .lines()
            .filter(|l| l.contains(&format!(" {node} ")) && l.contains(verdict))
            .count()
    };
    assert_eq!(answers("127.0.0.11", "verified"), 3, "{stdout}");
    assert_eq!(answers("127.0.0.12", "verified"), 3, "{stdout}");
    // An answer of the impostor that happens to fit (one of no tokens)
    // could pass; its window fails all the same.
    assert!(answers("127.0.0.18", "FAILED") >= 2, "{stdout}");
}

/// With a real small model installed (CI fetches SmolLM2-135M-Instruct
/// and names it in TVM_SMOLLM2_GGUF), the honest runtimes serve it and the
/// validator checks them with its built-in reference: uid 2 earns the v5
/// share, the impostor serving the toy under its name does not.
#[test]
fn devnet_once_with_a_real_model_pays_its_honest_servers_only() {
    let Some(model) = std::env::var_os("TVM_SMOLLM2_GGUF") else {
        assert!(
            std::env::var_os("TVM_REQUIRE_SMOLLM2").is_none(),
            "TVM_REQUIRE_SMOLLM2 is set but TVM_SMOLLM2_GGUF names no model file"
        );
        eprintln!("skipped: TVM_SMOLLM2_GGUF is not set");
        return;
    };
    let t = Instant::now();
    let out = devnet(&["--once", "--model-file"])
        .arg(&model)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("devnet with SmolLM2: {:.0} s", t.elapsed().as_secs_f64());
    let note = |uid: u16| v5_note(&stdout, uid);
    assert!(
        note(2).contains("gguf/SmolLM2-135M-Instruct.Q4_1") && !note(2).contains("failed"),
        "{}",
        note(2)
    );
    assert!(note(3).starts_with("note: v5 uid 3: 0.0 ("), "{}", note(3));
    assert!(
        stdout.contains("checked against the built-in reference running"),
        "{stdout}"
    );
    let verified = stdout
        .lines()
        .filter(|l| l.contains("127.0.0.1") && l.contains(" verified "))
        .count();
    assert_eq!(verified, 6, "{stdout}");
}

fn http_get(url: &str) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

/// Debian's chromium, headless: the DOM after the page loaded.
fn browser_dom(url: &str) -> Option<String> {
    let bin = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())?;
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_dashboard_shows_the_devnet_in_a_real_browser() {
    // No second epoch while the test looks.
    let mut child = devnet(&["--epoch-blocks", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120).saturating_sub(start.elapsed()))
            .expect("the devnet prints its dashboard address");
        if let Some(rest) = line.strip_prefix("dashboard: ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let result = std::panic::catch_unwind(|| {
        // The API and metrics, as a script would read them.
        let nodes: serde_json::Value =
            serde_json::from_str(&http_get(&format!("{url}api/v1/nodes"))).unwrap();
        assert_eq!(nodes["nodes"].as_array().unwrap().len(), 10, "{nodes}");
        assert!(nodes["round"]["finished_at"].is_i64());
        let miner: serde_json::Value =
            serde_json::from_str(&http_get(&format!("{url}api/v1/miners/2"))).unwrap();
        assert_eq!(miner["v6_points"], 3.0);
        assert_eq!(miner["weight"], 26541);
        let rounds: serde_json::Value =
            serde_json::from_str(&http_get(&format!("{url}api/v1/rounds"))).unwrap();
        // Committed (commit-reveal is the devnet's default), then read back
        // as revealed before the dashboard address was printed.
        let set = rounds[0]["set"].as_str().unwrap();
        assert!(set.starts_with("committed (block 0x"), "{set}");
        assert!(set.contains("; revealed: the chain holds them"), "{set}");
        let metrics = http_get(&format!("{url}metrics"));
        assert!(
            metrics.contains("tvm_validator_round_nodes{verdict=\"rejected\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("tvm_validator_verified_gpus 12"),
            "{metrics}"
        );

        let Some(dom) = browser_dom(&url) else {
            assert!(
                std::env::var_os("TVM_REQUIRE_BROWSER").is_none(),
                "chromium is not installed (apt-get install chromium)"
            );
            eprintln!("SKIPPED the browser check: chromium is not installed (apt-get install chromium; .ci/run does)");
            return;
        };
        assert!(dom.contains("<h1>tvm validator"), "{dom}");
        assert!(dom.contains("SIMULATED"));
        // The v5 reasons, on the dashboard.
        assert!(dom.contains("v5 uid 2: "), "{dom}");
        assert!(dom.contains("v5 uid 3: 0.0 ("), "{dom}");
        for n in [11, 12, 13, 14, 15, 16, 17, 18, 19, 20] {
            assert!(dom.contains(&format!("127.0.0.{n}")), "node .{n} listed");
        }
        // The wrong-nonce node's reason, in words.
        let row = dom
            .split("<tr>")
            .find(|r| r.contains("127.0.0.15"))
            .unwrap();
        assert!(row.contains("REJECTED"), "{row}");
        assert!(row.contains("report_data: "), "{row}");
        assert!(row.contains("spdm.nonce: "), "{row}");
        let silent = dom
            .split("<tr>")
            .find(|r| r.contains("127.0.0.17"))
            .unwrap();
        assert!(
            silent.contains("NO EVIDENCE") && silent.contains("cannot reach"),
            "{silent}"
        );
        // The unlisted image: the register and the manifest nearest to it.
        let unlisted = dom
            .split("<tr>")
            .find(|r| r.contains("127.0.0.19"))
            .unwrap();
        assert!(
            unlisted.contains("REJECTED")
                && unlisted.contains("nearest is tvm-simulated devnet")
                && unlisted.contains("first differing register mrtd"),
            "{unlisted}"
        );
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
