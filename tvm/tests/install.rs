//! `tvm install` as a miner runs it, against `tvm image serve` as an
//! operator runs it, on fixture hosts: the report sent and stored, the
//! release fetched and verified, the CVM's unit written and started; and
//! `tvm status` on what it started. Report intake's refusals over a socket.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tvm::check::host::Recorded;

mod common;
use common::{boot_files, publish_for, tvm, Fixture};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tvm image serve` in its own process; killed on drop.
struct Service {
    child: Child,
    url: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn image_serve(srv: &Path, reports: &Path) -> Service {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tvm"))
        .args(["image", "serve"])
        .arg(srv)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--reports"])
        .arg(reports)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tvm image serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Service {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Add recorded commands to a fixture.
fn record(f: &Fixture, more: &[(&str, &str)]) {
    let path = f.commands();
    let mut table: BTreeMap<String, Recorded> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (cmd, out) in more {
        table.insert(
            cmd.to_string(),
            Recorded {
                code: 0,
                stdout: out.to_string(),
                stderr: String::new(),
            },
        );
    }
    std::fs::write(&path, serde_json::to_string(&table).unwrap()).unwrap();
}

fn reports_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for hotkey in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for r in std::fs::read_dir(hotkey.path()).unwrap().flatten() {
            v.push(r.path());
        }
    }
    v
}

const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

#[test]
fn install_checks_reports_fetches_and_starts_the_cvm_and_status_shows_it() {
    let f = Fixture::new("tdx-h100x8-good");
    let work = f.dir.path();
    let p = publish_for(&work.join("op"), "hopper", "gpu", &boot_files(1 << 20), 8);
    let reports = work.join("reports");
    let svc = image_serve(&p.srv, &reports);
    let vm = work.join("vm");
    std::fs::create_dir_all(&vm).unwrap();
    let vm_s = vm.canonicalize().unwrap().display().to_string();
    let agent_port = free_port();
    record(
        &f,
        &[
            (
                &format!("df -B1 --output=avail {vm_s}"),
                "     Avail\n30000000000000\n",
            ),
            (
                &format!("qemu-img create -f qcow2 {vm_s}/cvm0.data.qcow2 2000000000000"),
                "",
            ),
            ("systemctl daemon-reload", ""),
            ("systemctl enable tvm-cvm0.service", ""),
            ("systemctl restart tvm-cvm0.service", ""),
            ("systemctl is-active tvm-cvm0.service", "active\n"),
        ],
    );
    let root = f.root().display().to_string();
    let commands = f.commands().display().to_string();
    let keys = p.keys_path.display().to_string();
    let port = agent_port.to_string();
    let (code, out, err) = tvm(&[
        "install",
        "--node-type",
        "hopper",
        "--root",
        &root,
        "--fixture-commands",
        &commands,
        "--service-url",
        &svc.url,
        "--vm-download-dir",
        &vm_s,
        "--host-machine-storage",
        "2TB",
        "--submit",
        "--hotkey-phrase",
        "//Alice",
        "--launch-vm",
        "--operator-keys",
        &keys,
        "--port",
        &port,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["schema"], "tvm-check/1");
    assert_eq!(report["ready"], true);
    assert!(err.contains("report sent: "), "{err}");
    assert!(err.contains("tvm-gpu 2026.12 verified"), "{err}");
    assert!(err.contains("cvm0 started (tvm-gpu 2026.12)"), "{err}");
    // The operator holds the report, under the miner's hotkey.
    let stored = reports_in(&reports);
    assert_eq!(stored.len(), 1);
    assert!(stored[0].starts_with(reports.join(ALICE)));
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stored[0]).unwrap()).unwrap();
    assert_eq!(kept, report);
    let (code, listing, _) = tvm(&["image", "reports", reports.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        listing.contains(&format!("{ALICE}  hopper    ready")),
        "{listing}"
    );
    // The release is complete; the unit runs tvm launch on it with the host's devices.
    let release = vm.join("tvm-gpu-2026.12");
    assert!(release.join("manifest.signed.json").exists());
    let unit =
        std::fs::read_to_string(f.root().join("etc/systemd/system/tvm-cvm0.service")).unwrap();
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.contains(" launch --manifest "), "{exec}");
    // The guest learns whose node it is from the miner settings beside it.
    assert!(
        exec.contains(&format!("--miner-config {vm_s}/cvm0.miner")),
        "{exec}"
    );
    let miner = std::fs::read_to_string(
        f.root()
            .join(vm_s.trim_start_matches('/'))
            .join("cvm0.miner"),
    )
    .unwrap();
    assert!(
        miner.contains(&format!("hotkey={ALICE}\nallow=any-signer\n")),
        "{miner}"
    );
    assert!(
        exec.contains(&format!("--image-dir {vm_s}/tvm-gpu-2026.12")),
        "{exec}"
    );
    assert!(
        exec.contains("--gpu 0000:18:00.0 --gpu 0000:2a:00.0"),
        "{exec}"
    );
    assert!(
        exec.contains("--switch 0000:05:00.0 --switch 0000:06:00.0 --switch 0000:07:00.0 --switch 0000:08:00.0"),
        "{exec}"
    );
    assert!(
        exec.contains(&format!("--data-disk {vm_s}/cvm0.data.qcow2")),
        "{exec}"
    );
    // Root runs a binary and a key set only root can change.
    let bin = format!("/usr/local/lib/tvm/tvm-{}", env!("CARGO_PKG_VERSION"));
    assert!(
        exec.starts_with(&format!("ExecStart={bin} launch ")),
        "{exec}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let copied = f.root().join(bin.trim_start_matches('/'));
        assert_eq!(
            std::fs::metadata(&copied).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read(&copied).unwrap(),
            std::fs::read(env!("CARGO_BIN_EXE_tvm")).unwrap()
        );
    }
    assert!(
        exec.contains("--keys /etc/tvm/operator-keys.json"),
        "{exec}"
    );
    let keys_copy = f.root().join("etc/tvm/operator-keys.json");
    assert_eq!(
        std::fs::read(&keys_copy).unwrap(),
        std::fs::read(&p.keys_path).unwrap()
    );
    assert!(exec.contains(" --qgs-port 4050 "), "{exec}");
    assert!(unit.contains("WantedBy=multi-user.target"));
    // The unit's command is one tvm launch accepts (dry run, same files).
    let keys_s = keys_copy.display().to_string();
    let miner_path = format!("{vm_s}/cvm0.miner");
    let miner_s = f
        .root()
        .join(vm_s.trim_start_matches('/'))
        .join("cvm0.miner")
        .display()
        .to_string();
    let words = exec
        .trim_start_matches("ExecStart=")
        .split(' ')
        .skip(1)
        .map(|w| {
            if w == "/etc/tvm/operator-keys.json" {
                keys_s.as_str()
            } else if w == miner_path {
                miner_s.as_str()
            } else {
                w
            }
        })
        .collect::<Vec<_>>();
    std::fs::write(vm.join("cvm0.data.qcow2"), b"").unwrap();
    let mut dry = words.clone();
    dry.push("--dry-run");
    let (code, qemu, err) = tvm(&dry);
    assert_eq!(code, 0, "{err}");
    assert!(qemu.contains("vfio-pci,host=0000:db:00.0"), "{qemu}");

    // tvm status: the unit is active and the agent answers ready.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(async {
        tokio::net::TcpListener::bind(("127.0.0.1", agent_port))
            .await
            .unwrap()
    });
    let health = {
        let _guard = rt.enter();
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({"status": "ok", "ready": true, "simulated": true}))
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await })
    };
    let (code, out, err) = tvm(&["status", "--root", &root, "--fixture-commands", &commands]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("cvm0  tvm-gpu 2026.12  unit tvm-cvm0.service active  agent ready, SIMULATED"),
        "{out}"
    );
    health.abort();
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    drop(rt);
    let (code, out, _) = tvm(&["status", "--root", &root, "--fixture-commands", &commands]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "agent unreachable at http://127.0.0.1:{agent_port}/health"
        )),
        "{out}"
    );
}

#[test]
fn a_host_that_is_not_ready_reports_and_fetches_nothing() {
    let f = Fixture::new("tdx-bios-off");
    let work = f.dir.path();
    let p = publish_for(&work.join("op"), "hopper", "gpu", &boot_files(1000), 8);
    let reports = work.join("reports");
    let svc = image_serve(&p.srv, &reports);
    let vm = work.join("vm");
    std::fs::create_dir_all(&vm).unwrap();
    let root = f.root().display().to_string();
    let commands = f.commands().display().to_string();
    let (code, out, err) = tvm(&[
        "install",
        "--node-type",
        "hopper",
        "--root",
        &root,
        "--fixture-commands",
        &commands,
        "--service-url",
        &svc.url,
        "--vm-download-dir",
        vm.to_str().unwrap(),
        "--submit",
        "--hotkey-phrase",
        "//Alice",
        "--launch-vm",
        "--operator-keys",
        p.keys_path.to_str().unwrap(),
        "--compact",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("FAIL  tee.bios"), "{out}");
    assert!(err.contains("this host cannot mine yet"), "{err}");
    // The operator sees the failing host; the miner downloaded nothing.
    assert_eq!(reports_in(&reports).len(), 1);
    assert!(std::fs::read_dir(&vm).unwrap().next().is_none());
    assert!(!f.root().join("etc/systemd/system").exists());
}

#[test]
fn install_usage_and_release_errors_have_their_exit_codes() {
    let f = Fixture::new("snp-genoa-cpu");
    let work = f.dir.path();
    let root = f.root().display().to_string();
    let commands = f.commands().display().to_string();
    let base = [
        "install",
        "--node-type",
        "cpu",
        "--root",
        &root,
        "--fixture-commands",
        &commands,
    ];
    let run = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        tvm(&a)
    };
    // Usage: 2.
    let (code, _, err) = run(&["--submit", "--service-url", "http://127.0.0.1:9"]);
    assert_eq!(code, 2);
    assert!(err.contains("--submit needs --hotkey-phrase"), "{err}");
    let (code, _, err) = run(&["--launch-vm"]);
    assert_eq!(code, 2);
    assert!(err.contains("need --service-url"), "{err}");
    // An unset variable would sign as the development key //Alice.
    let (code, _, err) = run(&[
        "--submit",
        "--service-url",
        "http://127.0.0.1:9",
        "--hotkey-phrase",
        " ",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--hotkey-phrase is empty"), "{err}");
    for name in ["-x", "a+b", ".hidden", "cvm 1"] {
        let (code, _, err) = run(&[
            "--service-url",
            "http://127.0.0.1:9",
            "--launch-vm",
            &format!("--name={name}"),
        ]);
        assert_eq!(code, 2, "{name}");
        assert!(err.contains("--name: letters, digits"), "{name}: {err}");
    }
    // The CVM must know whose node it is, and whom to answer.
    let (code, _, err) = run(&["--service-url", "http://127.0.0.1:9", "--launch-vm"]);
    assert_eq!(code, 2);
    assert!(err.contains("--launch-vm needs --hotkey-file"), "{err}");
    let (code, _, err) = run(&[
        "--service-url",
        "http://127.0.0.1:9",
        "--launch-vm",
        "--hotkey-phrase",
        "//Alice",
        "--validators",
        "5notanaddress",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--validators 5notanaddress"), "{err}");
    // Reading a copy of another host never changes this one.
    let (code, _, err) = tvm(&[
        "install",
        "--node-type",
        "cpu",
        "--root",
        &root,
        "--fix-warnings",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--root reads another host's files"), "{err}");
    // No operator key pinned in this build and none given.
    let (code, _, err) = run(&["--service-url", "http://127.0.0.1:9"]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "holds no operator key: give the subnet operator's key set with --operator-keys"
        ),
        "{err}"
    );
    // The release does not verify under the given keys: 3, nothing kept.
    let p = publish_for(&work.join("op"), "cpu", "cpu", &boot_files(1000), 0);
    let other = publish_for(&work.join("other"), "cpu", "cpu", &boot_files(10), 0);
    let svc = image_serve(&p.srv, &work.join("reports"));
    let vm = work.join("vm");
    std::fs::create_dir_all(&vm).unwrap();
    let vm_s = vm.canonicalize().unwrap().display().to_string();
    record(
        &f,
        &[(
            &format!("df -B1 --output=avail {vm_s}"),
            "     Avail\n3500000000000\n",
        )],
    );
    let (code, _, err) = run(&[
        "--service-url",
        &svc.url,
        "--vm-download-dir",
        &vm_s,
        "--operator-keys",
        other.keys_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("is not accepted"), "{err}");
    assert!(std::fs::read_dir(&vm).unwrap().next().is_none());
    // With the right keys it fetches (no --launch-vm: nothing started).
    let (code, _, err) = run(&[
        "--service-url",
        &svc.url,
        "--vm-download-dir",
        &vm_s,
        "--operator-keys",
        p.keys_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(vm.join("tvm-gpu-2026.12/manifest.signed.json").exists());
    // The report refused (a hotkey that just reported): 4.
    let submit = |code_want: i32| {
        let (code, _, err) = run(&[
            "--service-url",
            &svc.url,
            "--vm-download-dir",
            &vm_s,
            "--operator-keys",
            p.keys_path.to_str().unwrap(),
            "--submit",
            "--hotkey-phrase",
            "//Bob",
        ]);
        assert_eq!(code, code_want, "{err}");
        err
    };
    submit(0);
    let err = submit(4);
    assert!(err.contains("one report a minute per hotkey"), "{err}");
}

#[test]
fn report_intake_refuses_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let p = publish_for(dir.path(), "cpu", "cpu", &boot_files(10), 0);
    let reports = dir.path().join("reports");
    let svc = image_serve(&p.srv, &reports);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = tvm::download::client().unwrap();
        let url = format!("{}/v1/reports", svc.url);
        let alice = tvm_protocol::keys::Hotkey::from_uri("//Alice").unwrap();
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let send = |body: Vec<u8>, headers: Vec<(&'static str, String)>| {
            let mut req = c.post(&url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.body(body).send()
        };
        let report =
            br#"{"schema":"tvm-check/1","node_type":"cpu","ready":true,"checks":[]}"#.to_vec();
        // Unsigned.
        let r = send(report.clone(), vec![]).await.unwrap();
        assert_eq!(r.status(), 401);
        // Signed over other bytes.
        let h = tvm_protocol::epistula::sign(&alice, b"other", None, now()).to_pairs();
        let r = send(report.clone(), h).await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.text().await.unwrap().contains("signature"));
        // Not a report.
        let junk = b"{\"hello\":1}".to_vec();
        let h = tvm_protocol::epistula::sign(&alice, &junk, None, now()).to_pairs();
        let r = send(junk, h).await.unwrap();
        assert_eq!(r.status(), 400);
        // Too large: refused unread.
        let big = vec![b' '; tvm::image_service::MAX_REPORT + 1];
        let h = tvm_protocol::epistula::sign(&alice, &big, None, now()).to_pairs();
        let r = send(big, h).await.unwrap();
        assert_eq!(r.status(), 413);
        // Addressed to someone else: not replayable here.
        let bob = tvm_protocol::keys::Hotkey::from_uri("//Bob")
            .unwrap()
            .account_id();
        let h = tvm_protocol::epistula::sign(&alice, &report, Some(&bob), now()).to_pairs();
        let r = send(report.clone(), h).await.unwrap();
        assert_eq!(r.status(), 401);
        // Accepted once; the same request again is a replay.
        let h = tvm_protocol::epistula::sign(&alice, &report, None, now()).to_pairs();
        let r = send(report.clone(), h.clone()).await.unwrap();
        assert_eq!(r.status(), 201);
        let r = send(report.clone(), h).await.unwrap();
        assert_eq!(r.status(), 401);
        // A fresh one within the minute: rate limited.
        let h = tvm_protocol::epistula::sign(&alice, &report, None, now()).to_pairs();
        let r = send(report.clone(), h).await.unwrap();
        assert_eq!(r.status(), 429);
    });
    assert_eq!(reports_in(&reports).len(), 1);
}

/// The entry script miners run: Targon's flags reach `tvm install`.
#[test]
fn the_install_script_runs_tvm_install() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("install");
    let run = |args: &[&str]| {
        let out = Command::new(&script)
            .args(args)
            .env("TVM_BIN", env!("CARGO_BIN_EXE_tvm"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("tvm-install {}", env!("CARGO_PKG_VERSION"))
    );
    let f = Fixture::new("snp-genoa-cpu");
    let root = f.root().display().to_string();
    let commands = f.commands().display().to_string();
    let (code, out, err) = run(&[
        "--node-type",
        "cpu",
        "--host-machine-storage",
        "2",
        "--vm-download-dir",
        "/var/lib/tvm",
        "--root",
        &root,
        "--fixture-commands",
        &commands,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ready"], true);
    assert!(
        err.contains("host ready; give --service-url to fetch the release"),
        "{err}"
    );
}

/// Many hotkeys cannot make the intake hold more than its limit: a hotkey
/// at its keep limit replaces its oldest report, others are refused once
/// the service is full.
#[tokio::test]
async fn report_intake_holds_no_more_than_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    let limits = tvm::image_service::Limits {
        keep_per_hotkey: 2,
        max_reports: 3,
        min_interval: Duration::ZERO,
    };
    let url = common::serve(tvm::image_service::router_with(
        dir.path(),
        &reports,
        limits,
    ))
    .await;
    let c = tvm::download::client().unwrap();
    let report = br#"{"schema":"tvm-check/1","node_type":"cpu","ready":true,"checks":[]}"#;
    let mut ms = 0u64;
    let mut send = |who: &'static str| {
        let key = tvm_protocol::keys::Hotkey::from_uri(who).unwrap();
        // Distinct times, so the newest is known.
        ms += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + ms;
        let mut req = c.post(format!("{url}/v1/reports"));
        for (k, v) in tvm_protocol::epistula::sign(&key, report, None, now).to_pairs() {
            req = req.header(k, v);
        }
        req.body(report.to_vec()).send()
    };
    for (who, want) in [
        ("//Alice", 201),
        ("//Alice", 201),
        ("//Alice", 201), // replaces Alice's oldest: still 2 held
        ("//Bob", 201),   // 3 held
        ("//Charlie", 507),
        ("//Bob", 507),   // under his own limit, but the service is full
        ("//Alice", 201), // at her limit: replaces, the total stays
    ] {
        let status = send(who).await.unwrap().status().as_u16();
        assert_eq!(status, want, "{who}");
    }
    assert_eq!(reports_in(&reports).len(), 3);
}

/// Root must not boot from a folder other users can write.
#[test]
fn launch_refuses_a_release_folder_others_can_write() {
    if tvm::install::effective_uid() != Some(0) {
        eprintln!("skipped: the ownership rule applies when tvm install runs as root");
        return;
    }
    let f = Fixture::new("tdx-h100x8-good");
    let work = f.dir.path();
    let p = publish_for(&work.join("op"), "hopper", "gpu", &boot_files(1000), 8);
    let svc = image_serve(&p.srv, &work.join("reports"));
    let vm = work.join("vm");
    std::fs::create_dir_all(&vm).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&vm, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let vm_s = vm.canonicalize().unwrap().display().to_string();
    record(
        &f,
        &[(
            &format!("df -B1 --output=avail {vm_s}"),
            "     Avail\n30000000000000\n",
        )],
    );
    let root = f.root().display().to_string();
    let commands = f.commands().display().to_string();
    let (code, _, err) = tvm(&[
        "install",
        "--node-type",
        "hopper",
        "--root",
        &root,
        "--fixture-commands",
        &commands,
        "--service-url",
        &svc.url,
        "--vm-download-dir",
        &vm_s,
        "--host-machine-storage",
        "2TB",
        "--operator-keys",
        p.keys_path.to_str().unwrap(),
        "--hotkey-phrase",
        "//Alice",
        "--launch-vm",
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("with mode 777: other users could change what root boots"),
        "{err}"
    );
    assert!(!f.root().join("etc/systemd/system").exists());
}
