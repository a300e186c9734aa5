//! A minimal QMP client: what the Xen backend needs from the device model.
//!
//! The 2007 qemu-dm logged its DMA writes into two bitmaps shared with the
//! saver (the seed's double buffer). Today's QEMU does not: once told over
//! QMP (`xen-set-global-dirty-log`), it reports every page it writes into
//! Xen's own log-dirty bitmap (`HVMOP_modified_memory`), so those pages
//! reach the saver through CLEAN like the guest's. A live save that skips
//! the command misses every page written by emulated DMA after it was sent.
//! libxl makes the same call (`libxl__qmp_set_global_dirty_log`) on the
//! socket it creates for the domain, `/var/run/xen/qmp-libxl-DOMID`.
//!
//! Every read and write has a timeout: a device model that hangs is an
//! error, never a hung save.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::domain::DomainError;

/// libxl's QMP socket of domain `domid`.
pub fn libxl_socket(domid: u32) -> PathBuf {
    PathBuf::from(format!("/var/run/xen/qmp-libxl-{domid}"))
}

/// Longest line accepted from the device model (a reply or an event).
const MAX_LINE: u64 = 1 << 20;

/// A QMP session past capability negotiation.
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connect to `path`, read the greeting and leave capability
    /// negotiation mode. `timeout` bounds every read and write.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, DomainError> {
        let err = |what: &str, e: std::io::Error| {
            DomainError::Unavailable(format!("QMP at {}: {what}: {e}", path.display()))
        };
        let s = UnixStream::connect(path).map_err(|e| err("connect", e))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| err("set timeout", e))?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| err("set timeout", e))?;
        let writer = s.try_clone().map_err(|e| err("clone socket", e))?;
        let mut q = Qmp {
            path: path.to_path_buf(),
            reader: BufReader::new(s),
            writer,
        };
        let greeting = q.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(q.protocol(format!("expected the QMP greeting, found {greeting}")));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    /// Run `command` with `arguments`; its `return` value, or the device
    /// model's error. Asynchronous events before the reply are skipped.
    pub fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, DomainError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.io(&format!("sending {command}"), e))?;
        loop {
            let m = self.read_message()?;
            if m.get("event").is_some() {
                continue;
            }
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                let class = e.get("class").and_then(Value::as_str).unwrap_or("?");
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("");
                return Err(DomainError::refused(
                    "qmp",
                    format!("{command} at {}: {class}: {desc}", self.path.display()),
                ));
            }
            return Err(self.protocol(format!("unexpected reply to {command}: {m}")));
        }
    }

    /// `xen-set-global-dirty-log`: the device model starts (or stops)
    /// reporting the pages it writes into Xen's log-dirty bitmap.
    pub fn set_global_dirty_log(&mut self, enable: bool) -> Result<(), DomainError> {
        self.execute(
            "xen-set-global-dirty-log",
            Some(json!({ "enable": enable })),
        )
        .map(|_| ())
    }

    /// `stop`, then `xen-save-devices-state` into `file` (a path the device
    /// model can write: libxl's is `/var/lib/xen/qemu-save.DOMID`); returns
    /// the state (a QEVM file) and removes `file`. The device model stays
    /// stopped until [`Qmp::cont`]. A state over `max` bytes is an error.
    pub fn save_devices_state(&mut self, file: &Path, max: u64) -> Result<Vec<u8>, DomainError> {
        self.execute("stop", None)?;
        let _ = std::fs::remove_file(file);
        self.execute(
            "xen-save-devices-state",
            Some(json!({ "filename": file.to_string_lossy() })),
        )?;
        let read = || -> std::io::Result<Vec<u8>> {
            let f = std::fs::File::open(file)?;
            let mut data = Vec::new();
            f.take(max + 1).read_to_end(&mut data)?;
            Ok(data)
        };
        let data = read();
        let _ = std::fs::remove_file(file);
        let data = data.map_err(|e| {
            DomainError::refused(
                "qmp",
                format!("reading the device model's state {}: {e}", file.display()),
            )
        })?;
        if data.len() as u64 > max {
            return Err(DomainError::refused(
                "qmp",
                format!("the device model's state exceeds {max} bytes"),
            ));
        }
        Ok(data)
    }

    /// `cont`: the device model runs again (after a failed save).
    pub fn cont(&mut self) -> Result<(), DomainError> {
        self.execute("cont", None).map(|_| ())
    }

    fn read_message(&mut self) -> Result<Value, DomainError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .map_err(|e| self.io("reading", e))?;
        if n == 0 {
            return Err(self.protocol("the device model closed the connection".into()));
        }
        if !line.ends_with('\n') && n as u64 == MAX_LINE {
            return Err(self.protocol(format!("a message over {MAX_LINE} bytes")));
        }
        serde_json::from_str(line.trim_end())
            .map_err(|e| self.protocol(format!("not JSON ({e}): {:.80}", line.trim_end())))
    }

    fn io(&self, what: &str, e: std::io::Error) -> DomainError {
        let what = if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!("{what}: no answer in time")
        } else {
            format!("{what}: {e}")
        };
        DomainError::Unavailable(format!("QMP at {}: {what}", self.path.display()))
    }

    fn protocol(&self, what: String) -> DomainError {
        DomainError::refused("qmp", format!("{}: {what}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::thread;

    use super::*;

    /// A scripted device model: for each expected command, the lines to
    /// answer with. Returns what it received.
    fn fake(
        path: &Path,
        script: Vec<(&'static str, Vec<String>)>,
    ) -> thread::JoinHandle<Vec<Value>> {
        let listener = UnixListener::bind(path).unwrap();
        thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut got = Vec::new();
            for (want, replies) in script {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    return got;
                }
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["execute"], want, "{v}");
                got.push(v);
                for reply in replies {
                    writeln!(w, "{reply}").unwrap();
                }
            }
            // Keep the connection open, silent, until the client hangs up.
            let mut rest = String::new();
            while r.read_line(&mut rest).unwrap_or(0) > 0 {}
            got
        })
    }

    fn ok() -> String {
        r#"{"return": {}}"#.to_string()
    }

    #[test]
    fn enables_and_disables_the_global_dirty_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp");
        let server = fake(
            &path,
            vec![
                ("qmp_capabilities", vec![ok()]),
                (
                    "xen-set-global-dirty-log",
                    vec![
                        r#"{"event": "RESUME", "data": {}, "timestamp": {}}"#.into(),
                        ok(),
                    ],
                ),
                ("xen-set-global-dirty-log", vec![ok()]),
            ],
        );
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        q.set_global_dirty_log(true).unwrap();
        q.set_global_dirty_log(false).unwrap();
        drop(q);
        let got = server.join().unwrap();
        assert_eq!(got[1]["arguments"], json!({ "enable": true }));
        assert_eq!(got[2]["arguments"], json!({ "enable": false }));
    }

    #[test]
    fn saves_the_device_state_through_a_file_and_continues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp");
        let listener = UnixListener::bind(&path).unwrap();
        let state = b"QEVM\0\0\0\x03device state".to_vec();
        let want = state.clone();
        let server = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{}}}}"#).unwrap();
            let mut seen = Vec::new();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 0 {
                let v: Value = serde_json::from_str(&line).unwrap();
                line.clear();
                if v["execute"] == "xen-save-devices-state" {
                    let f = v["arguments"]["filename"].as_str().unwrap();
                    std::fs::write(f, &state).unwrap();
                }
                seen.push(v["execute"].as_str().unwrap().to_string());
                writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            }
            seen
        });
        let file = dir.path().join("qemu-save.7");
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(q.save_devices_state(&file, 1 << 20).unwrap(), want);
        assert!(!file.exists(), "the state file is removed");
        // Over the bound: an error, and still no file left.
        let e = q.save_devices_state(&file, 4).unwrap_err().to_string();
        assert!(e.contains("exceeds 4 bytes"), "{e}");
        assert!(!file.exists());
        q.cont().unwrap();
        drop(q);
        assert_eq!(
            server.join().unwrap(),
            [
                "qmp_capabilities",
                "stop",
                "xen-save-devices-state",
                "stop",
                "xen-save-devices-state",
                "cont"
            ]
        );
    }

    #[test]
    fn errors_name_the_socket_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        // Nobody listening.
        let e = Qmp::connect(&dir.path().join("none"), Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.to_string().contains("connect"), "{e}");
        // The device model refuses the command (qemu-traditional has no
        // such command).
        let path = dir.path().join("refuses");
        let server = fake(
            &path,
            vec![
                ("qmp_capabilities", vec![ok()]),
                (
                    "xen-set-global-dirty-log",
                    vec![r#"{"error": {"class": "CommandNotFound", "desc": "The command xen-set-global-dirty-log has not been found"}}"#.into()],
                ),
            ],
        );
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        let e = q.set_global_dirty_log(true).unwrap_err().to_string();
        assert!(
            e.contains("CommandNotFound") && e.contains("refuses"),
            "{e}"
        );
        drop(q);
        server.join().unwrap();
        // Silence: a timeout, not a hang.
        let path = dir.path().join("silent");
        let server = fake(
            &path,
            vec![
                ("qmp_capabilities", vec![ok()]),
                ("xen-set-global-dirty-log", vec![]),
            ],
        );
        let mut q = Qmp::connect(&path, Duration::from_millis(200)).unwrap();
        let e = q.set_global_dirty_log(true).unwrap_err().to_string();
        assert!(e.contains("no answer in time"), "{e}");
        drop(q);
        server.join().unwrap();
        // Not JSON.
        let path = dir.path().join("garbage");
        let server = fake(&path, vec![("qmp_capabilities", vec!["<html>".into()])]);
        let e = Qmp::connect(&path, Duration::from_secs(5))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not JSON"), "{e}");
        server.join().unwrap();
    }
}
