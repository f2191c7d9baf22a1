//! A real SMTP server (aiosmtpd, from PyPI into `.deps/smtp` by `scripts/test`): the sign-in
//! tests read codes, links and notices from the mail it actually received.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{free_port, root};

/// One received message, decoded by the server (tests/smtp/server.py).
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub content_type: String,
    pub text: String,
    pub html: String,
}

impl Mail {
    /// The 6-digit code on its own line.
    pub fn code(&self) -> String {
        self.text
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("no code in {:?}", self.text))
            .to_owned()
    }

    /// The first `http…` URL in the text part.
    pub fn link(&self) -> String {
        self.text
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no link in {:?}", self.text))
            .to_owned()
    }
}

pub struct Smtp {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Smtp {
    pub async fn start(dir: &Path) -> Self {
        Self::start_on(free_port(), dir).await
    }

    /// On a given port (to come back after [`Smtp::stop`]): mail goes to `dir/mail`.
    pub async fn start_on(port: u16, dir: &Path) -> Self {
        let mail_dir = dir.join("mail");
        let mut child = Command::new("python3")
            .arg(root().join("tests/smtp/server.py"))
            .arg(port.to_string())
            .arg(&mail_dir)
            .env("PYTHONPATH", root().join(".deps/smtp"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the SMTP server (python3 tests/smtp/server.py; run scripts/test)");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "ready" {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        assert!(ready, "the SMTP server did not start on port {port}");
        Self {
            child: Some(child),
            port,
            dir: mail_dir,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops the server (the port refuses connections until [`Smtp::start_on`] again).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Every message received so far, in order.
    pub fn all(&self) -> Vec<Mail> {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_str(&super::read(p)).expect("mail json"))
            .collect()
    }

    /// Messages to `to`.
    pub fn to(&self, to: &str) -> Vec<Mail> {
        self.all()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            .collect()
    }

    /// Waits for message number `n` (1-based) to `to`.
    pub async fn nth(&self, to: &str, n: usize) -> Mail {
        for _ in 0..200 {
            if let Some(m) = self.to(to).into_iter().nth(n - 1) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no message {n} to {to}; got {:#?}", self.all());
    }
}
