//! The binary: atomic 0600 images, refusal to overwrite, manifest beside the
//! image, stats lines, stdout into a closed pipe, TCP peer gone.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hvm-save"))
}

#[test]
fn file_is_0600_with_manifest_and_refuses_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("guest.img");
    let stats = dir.path().join("stats.jsonl");
    let out = bin()
        .args([
            "--sim",
            "--memory",
            "32",
            "--live",
            "--workload",
            "uniform",
            "-o",
        ])
        .arg(&img)
        .arg("--stats")
        .arg(&stats)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&img).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("passes") && stderr.contains("downtime"),
        "{stderr}"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("guest.img.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["memory_sha256"].as_str().unwrap().len(), 64);
    let lines = std::fs::read_to_string(&stats).unwrap();
    assert!(lines.lines().count() >= 3, "{lines}");
    assert!(lines.lines().last().unwrap().contains("\"summary\""));

    let before = std::fs::read(&img).unwrap();
    let out = bin()
        .args(["--sim", "--memory", "8", "-o"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read(&img).unwrap(), before, "untouched");
    let out = bin()
        .args(["--sim", "--memory", "8", "-q", "--force", "-o"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_ne!(std::fs::read(&img).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 3, "image, manifest, stats; no temporaries");
}

#[test]
fn missing_backends_say_so() {
    // --kvm exists; without /dev/kvm it must say so, with it a guest it
    // cannot build must be refused with the reason.
    let out = bin()
        .args(["--kvm", "--memory", "5", "-q", "-o", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    if std::path::Path::new("/dev/kvm").exists() {
        assert!(err.contains("memory must be an even number"), "{err}");
    } else {
        assert!(err.contains("/dev/kvm"), "{err}");
    }
    let out = bin().args(["--xen", "3", "-o", "-"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Xen"));
}

#[test]
fn closed_stdout_pipe_is_a_clean_error() {
    let mut child = bin()
        .args(["--sim", "--memory", "64", "-q", "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Broken pipe") || err.contains("broken pipe"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // One line, each cause once: where, what, and why.
    assert_eq!(
        err.to_lowercase().matches("broken pipe").count(),
        1,
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("at byte "), "{err}");
}

#[test]
fn tcp_peer_closing_is_a_clean_error_and_full_stream_arrives_otherwise() {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        drop(s);
    });
    let out = bin()
        .args(["--sim", "--memory", "64", "-q", "--to", &addr])
        .output()
        .unwrap();
    t.join().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        v
    });
    let out = bin()
        .args(["--sim", "--memory", "8", "-q", "--to", &addr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = t.join().unwrap();
    let mut r = hvm_format::stream::SliceReader::new(&v, hvm_format::WordSize::W64, 0);
    while r.next().unwrap().is_some() {}
    assert!(r.is_done());
}

/// `--throttle`: auto by default under the downtime policy (the summary
/// says what it cost, the stats carry the fields), off on request, refused
/// with the seed policy.
#[test]
fn throttle_flag_summary_and_stats_fields() {
    let dir = tempfile::tempdir().unwrap();
    let outpacing = [
        "--sim",
        "--memory",
        "64",
        "--live",
        "--workload",
        "hot-set",
        "--hot-pages",
        "8192",
        "--dirty-rate",
        "60000",
        "--link-mbps",
        "125",
        "--no-manifest",
    ];
    let run = |extra: &[&str], name: &str| {
        let stats = dir.path().join(format!("{name}.jsonl"));
        let out = bin()
            .args(outpacing)
            .args(extra)
            .arg("-o")
            .arg(dir.path().join(name))
            .arg("--stats")
            .arg(&stats)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&stats)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (out.status.code(), stderr, lines)
    };
    let (code, stderr, lines) = run(&[], "auto.img");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("guest throttled up to "), "{stderr}");
    let summary = &lines.last().unwrap()["summary"];
    assert!(summary["throttle_peak_percent"].as_u64().unwrap() >= 20);
    assert!(summary["throttled_us"].as_u64().unwrap() > 0);
    let passes = &lines[..lines.len() - 1];
    assert!(passes.iter().all(|p| p["throttle_percent"].is_u64()));
    assert!(passes
        .iter()
        .any(|p| p["throttle_percent"].as_u64() > Some(0)));
    assert!(passes.iter().all(|p| p["guest_rate"].is_f64()));

    let (code, stderr, lines) = run(&["--throttle", "off"], "off.img");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("throttled"), "{stderr}");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["throttle_peak_percent"], 0);
    assert_eq!(summary["throttled_us"], 0);

    let (code, stderr, _) = run(&["--policy", "seed", "--throttle", "auto"], "seed.img");
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--throttle auto needs --policy downtime"),
        "{stderr}"
    );
    assert!(!dir.path().join("seed.img").exists());
    let (code, stderr, _) = run(&["--policy", "seed"], "seed.img");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("throttled"), "{stderr}");
}
