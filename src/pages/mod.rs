//! The few HTML pages gatehouse shows (errors, access denied, welcome, email-first login;
//! local sign-in's in [`local`]). One layout, every dynamic value escaped.

pub mod local;

use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};

const STYLE: &str = "\
body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
background:#f4f5f7;color:#1f2328;display:flex;min-height:100vh;align-items:center;justify-content:center}\
main{background:#fff;border:1px solid #d8dee4;border-radius:12px;padding:2rem 2.25rem;max-width:28rem;\
width:calc(100% - 3rem);box-shadow:0 1px 3px rgba(0,0,0,.06)}\
h1{font-size:1.35rem;margin:0 0 .75rem}p{margin:.5rem 0}\
.who{font-weight:600}.muted{color:#59636e;font-size:.9rem}\
form{margin-top:1.25rem}input[type=email],input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.55rem .7rem;\
border:1px solid #d1d9e0;border-radius:6px;font:inherit;margin:.25rem 0 .75rem}\
button,.button{display:inline-block;background:#1f6feb;color:#fff;border:0;border-radius:6px;\
padding:.55rem 1rem;font:inherit;cursor:pointer;text-decoration:none}\
button.secondary{background:#eef1f4;color:#1f2328;border:1px solid #d1d9e0}\
.error{background:#ffebe9;border:1px solid #ff818266;border-radius:6px;padding:.5rem .75rem;color:#82071e}\
.notice{background:#ddf4ff;border:1px solid #54aeff66;border-radius:6px;padding:.5rem .75rem}\
.or{color:#59636e;text-align:center;margin:1.25rem 0 0}.links{margin-top:1rem;font-size:.9rem}\
.qr{display:flex;justify-content:center;margin:1rem 0}.qr svg{width:200px;height:200px}\
code.secret{display:block;word-break:break-all;background:#f6f8fa;padding:.5rem;border-radius:6px;font-size:.95rem}\
ul.codes{columns:2;font-family:ui-monospace,monospace;padding-left:1.2rem}";

/// A page with a title, a message and an optional link (`(href, label)`).
pub fn message_page(title: &str, message: &str, link: Option<(&str, &str)>) -> String {
    let link = link
        .map(|(href, label)| {
            format!(
                "<p><a class=\"button\" href=\"{}\">{}</a></p>",
                attr(href),
                text(label)
            )
        })
        .unwrap_or_default();
    layout(
        title,
        &format!("<h1>{}</h1><p>{}</p>{link}", text(title), text(message)),
    )
}

/// The page for a signed-in user whose account an admin has not enabled yet.
pub fn welcome_page(email: &str, logout_action: &str) -> String {
    layout(
        "Account pending",
        &format!(
            "<h1>Your account is almost ready</h1>\
             <p>You are signed in as <span class=\"who\">{}</span>.</p>\
             <p>An administrator must enable your account before you can continue. \
             You will not need to sign in again once they have.</p>\
             <form method=\"post\" action=\"{}\"><button class=\"secondary\" type=\"submit\">Sign out</button></form>",
            text(email),
            attr(logout_action),
        ),
    )
}

/// Email-first home-realm discovery: asks for the email, then continues the login with it as
/// `login_hint`. `rd` is carried through as a hidden field.
/// `signup`: the login was started with `signup=1`, which the form carries on.
pub fn email_first_page(action: &str, rd: &str, note: Option<&str>, signup: bool) -> String {
    let note = note
        .map(|n| format!("<p>{}</p>", text(n)))
        .unwrap_or_default();
    let signup = if signup {
        "<input type=\"hidden\" name=\"signup\" value=\"1\">"
    } else {
        ""
    };
    layout(
        "Sign in",
        &format!(
            "<h1>Sign in</h1>{note}\
             <p class=\"muted\">Enter your work email and we will send you to your organization's sign-in.</p>\
             <form method=\"get\" action=\"{}\">\
             <input type=\"hidden\" name=\"rd\" value=\"{}\">{signup}\
             <label for=\"login_hint\">Email</label>\
             <input id=\"login_hint\" type=\"email\" name=\"login_hint\" required autofocus autocomplete=\"username\">\
             <button type=\"submit\">Continue</button></form>",
            attr(action),
            attr(rd),
        ),
    )
}

/// Support staff: whom to act as.
pub fn impersonate_page(email: &str, action: &str, csrf: &str) -> String {
    layout(
        "Act as a user",
        &format!(
            "<h1>Act as a user</h1>\
             <p>You are signed in as <span class=\"who\">{}</span>.</p>\
             <p class=\"muted\">Every service will see you as that user (and that you are acting \
             for them). This is recorded in the audit trail.</p>\
             <form method=\"post\" action=\"{}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label for=\"user\">User (email or id)</label>\
             <input id=\"user\" type=\"text\" name=\"user\" required autofocus>\
             <button type=\"submit\">Act as this user</button></form>",
            text(email),
            attr(action),
            attr(csrf),
        ),
    )
}

/// While impersonating: who, for whom, and the way back.
pub fn impersonating_page(email: &str, by: &str, stop_action: &str, csrf: &str) -> String {
    layout(
        "Acting as a user",
        &format!(
            "<h1>You are acting as <span class=\"who\">{}</span></h1>\
             <p>Signed in as <span class=\"who\">{}</span>.</p>\
             <form method=\"post\" action=\"{}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Stop acting as this user</button></form>",
            text(email),
            text(by),
            attr(stop_action),
            attr(csrf),
        ),
    )
}

pub(crate) fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        text(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_values_are_escaped() {
        let page = message_page("<x>", "a & b", Some(("/x?a=\"1\"", "<go>")));
        assert!(page.contains("&lt;x&gt;"));
        assert!(page.contains("a &amp; b"));
        assert!(page.contains("/x?a=&quot;1&quot;"));
        assert!(!page.contains("<go>"));
        let welcome = welcome_page("<script>@x", "/auth/logout");
        assert!(!welcome.contains("<script>"));
        let email_first = email_first_page("/auth/login", "\"><script>", Some("<b>"), true);
        assert!(!email_first.contains("\"><script>"));
        assert!(!email_first.contains("<b>"));
        assert!(
            email_first.contains("name=\"signup\" value=\"1\""),
            "signup carries on"
        );
        assert!(!email_first_page("/auth/login", "/", None, false).contains("signup"));
    }
}
