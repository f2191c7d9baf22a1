//! Sending mail: SMTP through `lettre` (`smtp://` with STARTTLS, `smtps://`), or the log for
//! development (`smtp_url = "log"`), and the messages local sign-in sends. Each message has a
//! plain-text and an HTML part and names the product and, where there is one, the org.

use std::time::Duration;

use html_escape::encode_text as esc;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::config::EmailConfig;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("email.smtp_url: {0}")]
    Url(String),
    #[error("email.smtp_password_env: the variable {0} is not set")]
    Password(String),
    #[error("cannot build the message: {0}")]
    Message(String),
    #[error("the SMTP server refused or could not be reached: {0}")]
    Send(String),
}

/// Where mail goes.
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Development: the message is logged (with its codes and links).
    Log,
}

pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    product: String,
}

/// One message, before it is addressed and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Mailer {
    pub fn new(config: &EmailConfig) -> Result<Self, MailError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| MailError::Url(format!("email.from: {e}")))?;
        let transport = if config.smtp_url == "log" {
            Transport::Log
        } else {
            let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url)
                .map_err(|e| MailError::Url(e.to_string()))?
                .timeout(Some(Duration::from_secs(10)));
            if let Some(var) = &config.smtp_password_env {
                let password = std::env::var(var)
                    .map(SecretString::from)
                    .map_err(|_| MailError::Password(var.clone()))?;
                let user = url::Url::parse(&config.smtp_url)
                    .map(|u| {
                        percent_encoding::percent_decode_str(u.username())
                            .decode_utf8_lossy()
                            .into_owned()
                    })
                    .unwrap_or_default();
                builder = builder
                    .credentials(Credentials::new(user, password.expose_secret().to_owned()));
            }
            Transport::Smtp(builder.build())
        };
        Ok(Self {
            transport,
            from,
            product: config.product_name.clone(),
        })
    }

    /// Whether messages only go to the log (development).
    pub fn logs_only(&self) -> bool {
        matches!(self.transport, Transport::Log)
    }

    pub fn product(&self) -> &str {
        &self.product
    }

    pub async fn send(&self, to: &str, mail: Mail) -> Result<(), MailError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| MailError::Message(format!("recipient: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to.clone())
            .subject(&mail.subject)
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| MailError::Message(e.to_string()))?;
        match &self.transport {
            Transport::Smtp(smtp) => smtp
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| MailError::Send(e.to_string())),
            Transport::Log => {
                tracing::warn!(
                    to = %to,
                    subject = %mail.subject,
                    body = %mail.text,
                    "email.smtp_url = \"log\": this message was NOT sent (development only)"
                );
                Ok(())
            }
        }
    }

    // === the messages ===

    fn frame(&self, subject: String, lines: &[&str], action: Option<(&str, &str)>) -> Mail {
        let mut text = lines.join("\n\n");
        let mut html = String::from(
            "<!doctype html><html><body style=\"font-family:system-ui,sans-serif;\
             max-width:32rem;margin:1rem auto;color:#1f2328\">",
        );
        for line in lines {
            html.push_str(&format!("<p>{}</p>", esc(line)));
        }
        if let Some((label, url)) = action {
            text.push_str(&format!("\n\n{label}: {url}"));
            html.push_str(&format!(
                "<p><a href=\"{}\" style=\"display:inline-block;padding:.6rem 1rem;\
                 background:#0969da;color:#fff;border-radius:6px;text-decoration:none\">{}</a></p>",
                html_escape::encode_double_quoted_attribute(url),
                esc(label)
            ));
        }
        text.push_str(&format!("\n\n— {}", self.product));
        html.push_str(&format!(
            "<p style=\"color:#59636e\">— {}</p></body></html>",
            esc(&self.product)
        ));
        Mail {
            subject,
            text,
            html,
        }
    }

    /// The sign-in (or sign-up) code, and the link when the sign-in runs in a browser (an
    /// app's sign-in through the API has no browser for it to open in).
    pub fn code_mail(
        &self,
        org: Option<&str>,
        code: &str,
        link: Option<&str>,
        ttl_minutes: i64,
    ) -> Mail {
        let product = &self.product;
        let to = match org {
            Some(org) => format!("{product} ({org})"),
            None => product.clone(),
        };
        let how = match link {
            Some(_) => format!(
                "Type it on the sign-in page, or use the button below in the same browser. \
                 Both work once and expire in {ttl_minutes} minutes."
            ),
            None => format!(
                "Type it where you are signing in. It works once and expires in {ttl_minutes} minutes."
            ),
        };
        self.frame(
            format!("Your {product} sign-in code: {code}"),
            &[
                &format!("Your code to sign in to {to} is:"),
                code,
                &how,
                "If you did not try to sign in, ignore this message.",
            ],
            link.map(|l| ("Sign in", l)),
        )
    }

    /// Answers a code request or a reset for an address that has no account (and may not
    /// sign up): the same kind of message, so nothing tells the two apart but the inbox.
    pub fn no_account_mail(&self, email: &str) -> Mail {
        let product = &self.product;
        self.frame(
            format!("Signing in to {product}"),
            &[
                &format!(
                    "Someone (hopefully you) asked to sign in to {product} as {email}, but there \
                     is no account for this address."
                ),
                "If you expected one, ask your administrator for an invitation. Otherwise, \
                 ignore this message.",
            ],
            None,
        )
    }

    pub fn reset_mail(&self, org: Option<&str>, link: &str, ttl_minutes: i64) -> Mail {
        let product = &self.product;
        let to = match org {
            Some(org) => format!("{product} ({org})"),
            None => product.clone(),
        };
        self.frame(
            format!("Reset your {product} password"),
            &[
                &format!("Someone asked to reset the password of your {to} account."),
                &format!(
                    "The link below works once and expires in {ttl_minutes} minutes. Resetting \
                     your password signs you out everywhere."
                ),
                "If you did not ask for this, ignore this message: your password stays as it is.",
            ],
            Some(("Choose a new password", link)),
        )
    }

    /// Answers a code request while the account's local sign-in is blocked.
    pub fn blocked_mail(&self) -> Mail {
        let product = &self.product;
        self.frame(
            format!("Signing in to {product}"),
            &[
                &format!(
                    "Someone (hopefully you) asked for a {product} sign-in code, but signing in \
                     to this account with a code or password is blocked for a while after \
                     repeated failed attempts."
                ),
                "Please try again later. Single sign-on, where your organization has it, is \
                 not affected.",
            ],
            None,
        )
    }

    pub fn locked_mail(&self, when: &str, ip: &str, user_agent: &str, minutes: i64) -> Mail {
        let product = &self.product;
        self.frame(
            format!("Your {product} sign-in was blocked"),
            &[
                &format!(
                    "After repeated failed attempts, signing in to your {product} account with \
                     a password or code is blocked for {minutes} minutes."
                ),
                &format!("Last attempt: {when}, from {ip}, with {user_agent}."),
                "If this was not you, someone may be guessing your password: once the block \
                 ends, choose a new one with \"Forgot password\". Single sign-on is not affected.",
            ],
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::config::check_smtp_url;

    fn mailer() -> Mailer {
        Mailer::new(&EmailConfig {
            smtp_url: "log".into(),
            smtp_password_env: None,
            from: "Acme <no-reply@acme.test>".into(),
            product_name: "Acme <Portal>".into(),
        })
        .unwrap()
    }

    #[test]
    fn urls_are_checked() {
        for ok in [
            "log",
            "smtp://127.0.0.1:2525",
            "smtp://mail.test:587?tls=required",
            "smtps://user@mail.test:465",
        ] {
            assert!(check_smtp_url(ok).is_ok(), "{ok}");
        }
        for bad in ["", "http://mail", "mail.test:25", "smtp//x"] {
            assert!(check_smtp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_have_both_parts_escaped() {
        let m = mailer();
        let mail = m.code_mail(
            Some("Globex"),
            "123456",
            Some("https://x.test/l?t=a&b=c"),
            10,
        );
        assert!(mail.subject.contains("123456"));
        assert!(mail.text.contains("Acme <Portal> (Globex)"));
        assert!(mail.text.contains("https://x.test/l?t=a&b=c"));
        assert!(mail.html.contains("Acme &lt;Portal&gt;"));
        assert!(mail.html.contains("href=\"https://x.test/l?t=a&amp;b=c\""));
        assert!(!mail.html.contains("<Portal>"));
        let api = m.code_mail(None, "654321", None, 10);
        assert!(
            !api.text.contains("http") && !api.html.contains("href"),
            "{api:?}"
        );
    }
}
