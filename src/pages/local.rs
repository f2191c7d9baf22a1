//! Local sign-in's pages: the methods of an address, code entry, TOTP entry and enrollment,
//! recovery codes, forgot and reset, and the password change. Every form is a plain POST with
//! a hidden `csrf` field (no JavaScript); every dynamic value is escaped.

use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};

use super::layout;

/// What the sign-in page offers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offer<'a> {
    pub email_code: bool,
    pub password: bool,
    /// `/auth/login?...&idp=...`: also sign in with SSO.
    pub sso: Option<&'a str>,
}

fn banner(error: Option<&str>, notice: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(e) = error {
        out.push_str(&format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            text(e)
        ));
    }
    if let Some(n) = notice {
        out.push_str(&format!("<p class=\"notice\">{}</p>", text(n)));
    }
    out
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        attr(csrf)
    )
}

/// The methods of `email`'s sign-in.
pub fn signin_page(
    email: &str,
    csrf: &str,
    offer: Offer<'_>,
    error: Option<&str>,
    restart: &str,
) -> String {
    let mut body = format!(
        "<h1>Sign in</h1>{}<p>as <span class=\"who\">{}</span> · <a href=\"{}\">not you?</a></p>",
        banner(error, None),
        text(email),
        attr(restart)
    );
    if offer.password {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/auth/local/password\">{}\
             <input type=\"hidden\" name=\"username\" value=\"{}\" autocomplete=\"username\">\
             <label for=\"password\">Password</label>\
             <input id=\"password\" type=\"password\" name=\"password\" required autofocus \
             autocomplete=\"current-password\">\
             <button type=\"submit\">Sign in</button></form>\
             <p class=\"links\"><a href=\"/auth/local/forgot\">Forgot your password?</a></p>",
            csrf_field(csrf),
            attr(email)
        ));
    }
    if offer.email_code {
        if offer.password {
            body.push_str("<p class=\"or\">or</p>");
        }
        body.push_str(&format!(
            "<form method=\"post\" action=\"/auth/local/code/send\">{}\
             <p class=\"muted\">We will email you a 6-digit code and a sign-in link.</p>\
             <button type=\"submit\"{}>Email me a sign-in code</button></form>",
            csrf_field(csrf),
            if offer.password {
                " class=\"secondary\""
            } else {
                ""
            }
        ));
    }
    if let Some(sso) = offer.sso {
        body.push_str(&format!(
            "<p class=\"or\">or</p><p><a class=\"button\" href=\"{}\">Sign in with SSO</a></p>",
            attr(sso)
        ));
    }
    layout("Sign in", &body)
}

/// After a code was sent: where to type it.
pub fn code_page(email: &str, csrf: &str, error: Option<&str>, notice: Option<&str>) -> String {
    layout(
        "Check your email",
        &format!(
            "<h1>Check your email</h1>{}\
             <p>We sent a code and a sign-in link to <span class=\"who\">{}</span>. \
             Use either one, in this browser.</p>\
             <form method=\"post\" action=\"/auth/local/code\">{}\
             <label for=\"code\">6-digit code</label>\
             <input id=\"code\" type=\"text\" name=\"code\" inputmode=\"numeric\" pattern=\"[0-9 ]*\" \
             maxlength=\"7\" required autofocus autocomplete=\"one-time-code\">\
             <button type=\"submit\">Continue</button></form>\
             <form method=\"post\" action=\"/auth/local/code/send\">{}\
             <button class=\"secondary\" type=\"submit\">Send a new code</button></form>",
            banner(error, notice),
            text(email),
            csrf_field(csrf),
            csrf_field(csrf),
        ),
    )
}

/// The second step: a TOTP code or a recovery code.
pub fn totp_page(csrf: &str, error: Option<&str>) -> String {
    layout(
        "Two-factor authentication",
        &format!(
            "<h1>Two-factor authentication</h1>{}\
             <p>Enter the 6-digit code from your authenticator app.</p>\
             <form method=\"post\" action=\"/auth/local/totp\">{}\
             <label for=\"code\">Authentication code</label>\
             <input id=\"code\" type=\"text\" name=\"code\" inputmode=\"numeric\" maxlength=\"11\" \
             required autofocus autocomplete=\"one-time-code\">\
             <button type=\"submit\">Verify</button></form>\
             <p class=\"muted\">Lost your device? Enter one of your recovery codes instead.</p>",
            banner(error, None),
            csrf_field(csrf),
        ),
    )
}

/// TOTP enrollment: the QR code (an SVG gatehouse drew: trusted markup), the secret as text,
/// and the first code that confirms it.
pub fn enroll_page(qr_svg: &str, secret: &str, csrf: &str, error: Option<&str>) -> String {
    layout(
        "Set up two-factor authentication",
        &format!(
            "<h1>Set up two-factor authentication</h1>{}\
             <p>Scan this code with an authenticator app (1Password, Google Authenticator, \
             Authy, …).</p><div class=\"qr\">{qr_svg}</div>\
             <p class=\"muted\">Or type this key:</p><code class=\"secret\">{}</code>\
             <form method=\"post\" action=\"/auth/local/totp/enroll\">{}\
             <label for=\"code\">The 6-digit code the app shows</label>\
             <input id=\"code\" type=\"text\" name=\"code\" inputmode=\"numeric\" maxlength=\"7\" \
             required autofocus autocomplete=\"one-time-code\">\
             <button type=\"submit\">Turn on</button></form>",
            banner(error, None),
            text(secret),
            csrf_field(csrf),
        ),
    )
}

/// Shown once, after enrollment.
pub fn recovery_codes_page(codes: &[String], continue_to: &str) -> String {
    let items: String = codes
        .iter()
        .map(|c| format!("<li>{}</li>", text(c)))
        .collect();
    layout(
        "Your recovery codes",
        &format!(
            "<h1>Two-factor authentication is on</h1>\
             <p>Keep these recovery codes somewhere safe. Each works once, if you lose your \
             authenticator. They are not shown again.</p><ul class=\"codes\">{items}</ul>\
             <p><a class=\"button\" href=\"{}\">Continue</a></p>",
            attr(continue_to)
        ),
    )
}

pub fn forgot_page(csrf: &str, error: Option<&str>, notice: Option<&str>) -> String {
    layout(
        "Reset your password",
        &format!(
            "<h1>Reset your password</h1>{}\
             <form method=\"post\" action=\"/auth/local/forgot\">{}\
             <label for=\"email\">Email</label>\
             <input id=\"email\" type=\"email\" name=\"email\" required autofocus autocomplete=\"username\">\
             <button type=\"submit\">Email me a reset link</button></form>",
            banner(error, notice),
            csrf_field(csrf),
        ),
    )
}

/// The reset link's page: a new password. The link's token is the form's CSRF proof.
pub fn reset_page(token: &str, email: &str, error: Option<&str>, min_length: usize) -> String {
    layout(
        "Choose a new password",
        &format!(
            "<h1>Choose a new password</h1>{}<p>for <span class=\"who\">{}</span></p>\
             <form method=\"post\" action=\"/auth/local/reset\">\
             <input type=\"hidden\" name=\"t\" value=\"{}\">\
             <input type=\"hidden\" name=\"username\" value=\"{}\" autocomplete=\"username\">\
             <label for=\"password\">New password (at least {min_length} characters)</label>\
             <input id=\"password\" type=\"password\" name=\"password\" required autofocus \
             autocomplete=\"new-password\">\
             <button type=\"submit\">Set password</button></form>\
             <p class=\"muted\">This signs you out everywhere else.</p>",
            banner(error, None),
            text(email),
            attr(token),
            attr(email),
        ),
    )
}

/// A signed-in user sets or changes their password (`current`: they have one to confirm).
pub fn password_page(
    email: &str,
    csrf: &str,
    current: bool,
    error: Option<&str>,
    notice: Option<&str>,
    min_length: usize,
) -> String {
    let current_field = if current {
        "<label for=\"current\">Current password</label>\
         <input id=\"current\" type=\"password\" name=\"current\" required autocomplete=\"current-password\">"
    } else {
        ""
    };
    layout(
        "Your password",
        &format!(
            "<h1>{}</h1>{}<p>for <span class=\"who\">{}</span></p>\
             <form method=\"post\" action=\"/auth/local/account/password\">{}\
             <input type=\"hidden\" name=\"username\" value=\"{}\" autocomplete=\"username\">\
             {current_field}<label for=\"password\">New password (at least {min_length} characters)</label>\
             <input id=\"password\" type=\"password\" name=\"password\" required \
             autocomplete=\"new-password\">\
             <button type=\"submit\">Save</button></form>\
             <p class=\"muted\">Your other sessions end when you save.</p>",
            if current {
                "Change your password"
            } else {
                "Set a password"
            },
            banner(error, notice),
            text(email),
            csrf_field(csrf),
            attr(email),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_forms_carry_csrf() {
        let evil = "\"><script>alert(1)</script>";
        let pages = [
            signin_page(
                evil,
                evil,
                Offer {
                    email_code: true,
                    password: true,
                    sso: Some(evil),
                },
                Some(evil),
                evil,
            ),
            code_page(evil, evil, Some(evil), Some(evil)),
            totp_page(evil, Some(evil)),
            enroll_page("<svg></svg>", evil, evil, Some(evil)),
            recovery_codes_page(&[evil.to_owned()], evil),
            forgot_page(evil, Some(evil), None),
            reset_page(evil, evil, Some(evil), 12),
            password_page(evil, evil, true, Some(evil), None, 12),
        ];
        for page in &pages {
            assert!(!page.contains("<script>"), "{page}");
        }
        for page in [
            &pages[0], &pages[1], &pages[2], &pages[3], &pages[5], &pages[7],
        ] {
            let forms = page.matches("<form method=\"post\"").count();
            assert_eq!(page.matches("name=\"csrf\"").count(), forms, "{page}");
        }
        let only_code = signin_page(
            "a@b.test",
            "c",
            Offer {
                email_code: true,
                ..Offer::default()
            },
            None,
            "/auth/login",
        );
        assert!(!only_code.contains("type=\"password\""));
        assert!(only_code.contains("/auth/local/code/send"));
    }
}
