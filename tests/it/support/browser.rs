//! A small browser model for the login tests: a cookie jar, redirects, and the pages that a real
//! browser submits by script (the IdP's form_post page and logout confirmation).
//!
//! Cookie rules follow Chrome's, made stricter in one way: any request from another *origin*
//! counts as cross-site (browsers compare sites, and 127.0.0.1 on two ports is one site). So a
//! POST from the IdP's origin to gatehouse carries only `SameSite=None` cookies, which is what
//! makes the form_post test meaningful. `Secure` cookies are kept and sent over http only for
//! loopback hosts, as Chrome does for `localhost`/`127.0.0.1`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use cookie::{Cookie, SameSite};
use regex::Regex;
use url::Url;

use super::client::{Response, send_bytes};

#[derive(Debug, Clone)]
struct StoredCookie {
    name: String,
    value: String,
    host: String,
    path: String,
    secure: bool,
    same_site: Option<SameSite>,
    expires: Option<SystemTime>,
}

/// One response, with where it came from and the redirects that led to it.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: Url,
    pub response: Response,
    /// `METHOD URL -> status` for every hop, for failure messages.
    pub hops: Vec<String>,
}

impl Page {
    pub fn status(&self) -> u16 {
        self.response.status
    }

    pub fn body(&self) -> &str {
        &self.response.body
    }

    /// The `Set-Cookie` headers of the last hop.
    pub fn set_cookies(&self) -> Vec<String> {
        self.response
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    }
}

/// A request the browser was about to make when told to stop (see [`Browser::navigate_until`]).
#[derive(Debug, Clone)]
pub struct Pending {
    pub method: String,
    pub url: Url,
    pub body: Option<String>,
    pub initiator: Option<String>,
    pub hops: Vec<String>,
}

/// Whether to stop before a request: `(method, url)`.
pub type Stop<'a> = &'a (dyn Fn(&str, &Url) -> bool + Sync);

/// An HTML form: action resolved against the page URL, method, and its named inputs.
#[derive(Debug, Clone)]
pub struct Form {
    pub id: Option<String>,
    pub action: Url,
    pub method: String,
    pub fields: Vec<(String, String)>,
}

#[derive(Default)]
pub struct Browser {
    jar: Vec<StoredCookie>,
}

const MAX_HOPS: usize = 25;

impl Browser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Goes to `url` as if typed into the address bar, following redirects and auto-submitted
    /// forms until a page needs the user.
    pub async fn navigate(&mut self, url: &str) -> Page {
        self.navigate_until(url, &|_, _| false)
            .await
            .unwrap_or_else(|p| panic!("stopped at {p:?}"))
    }

    /// Like [`navigate`](Self::navigate), but returns the request instead of making it when
    /// `stop` says so.
    pub async fn navigate_until(&mut self, url: &str, stop: Stop<'_>) -> Result<Page, Pending> {
        let url = Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url:?}: {e}"));
        self.run(
            Pending {
                method: "GET".into(),
                url,
                body: None,
                initiator: None,
                hops: Vec::new(),
            },
            stop,
        )
        .await
    }

    /// Makes a request the browser stopped before (possibly after the test changed it).
    pub async fn resume(&mut self, pending: Pending) -> Page {
        self.run(pending, &|_, _| false)
            .await
            .unwrap_or_else(|p| panic!("stopped at {p:?}"))
    }

    /// Submits `form` with these field overrides/additions, as the user clicking its button.
    pub async fn submit(&mut self, page: &Page, form: &Form, extra: &[(&str, &str)]) -> Page {
        self.submit_until(page, form, extra, &|_, _| false)
            .await
            .unwrap_or_else(|p| panic!("stopped at {p:?}"))
    }

    pub async fn submit_until(
        &mut self,
        page: &Page,
        form: &Form,
        extra: &[(&str, &str)],
        stop: Stop<'_>,
    ) -> Result<Page, Pending> {
        let mut fields = form.fields.clone();
        for (k, v) in extra {
            fields.retain(|(name, _)| name != k);
            fields.push(((*k).to_owned(), (*v).to_owned()));
        }
        let initiator = Some(origin(&page.url));
        let pending = if form.method.eq_ignore_ascii_case("post") {
            Pending {
                method: "POST".into(),
                url: form.action.clone(),
                body: Some(encode(&fields)),
                initiator,
                hops: page.hops.clone(),
            }
        } else {
            let mut url = form.action.clone();
            url.query_pairs_mut().clear().extend_pairs(fields.iter());
            Pending {
                method: "GET".into(),
                url,
                body: None,
                initiator,
                hops: page.hops.clone(),
            }
        };
        self.run(pending, stop).await
    }

    async fn run(&mut self, start: Pending, stop: Stop<'_>) -> Result<Page, Pending> {
        let Pending {
            mut method,
            mut url,
            mut body,
            mut initiator,
            mut hops,
        } = start;
        for _ in 0..MAX_HOPS {
            if stop(&method, &url) {
                return Err(Pending {
                    method,
                    url,
                    body,
                    initiator,
                    hops,
                });
            }
            let response = self
                .request(&method, &url, body.as_deref(), initiator.as_deref())
                .await;
            hops.push(format!("{method} {url} -> {}", response.status));
            if matches!(response.status, 301 | 302 | 303 | 307 | 308) {
                let location = response
                    .location()
                    .unwrap_or_else(|| panic!("redirect without Location: {hops:#?}"));
                let next = url
                    .join(location)
                    .unwrap_or_else(|e| panic!("bad Location {location:?}: {e}"));
                initiator = Some(origin(&url));
                url = next;
                if !matches!(response.status, 307 | 308) {
                    method = "GET".into();
                    body = None;
                }
                continue;
            }
            let page = Page {
                url: url.clone(),
                response,
                hops: hops.clone(),
            };
            // Pages that submit themselves by script (form_post, logout confirmation).
            if page.response.status == 200
                && page.body().contains(".submit()")
                && let Some(form) = forms(&page).into_iter().next()
            {
                initiator = Some(origin(&page.url));
                method = form.method.to_ascii_uppercase();
                url = form.action.clone();
                body = Some(encode(&form.fields));
                continue;
            }
            return Ok(page);
        }
        panic!("too many redirects: {hops:#?}");
    }

    /// One request with the cookies a browser would send, storing what comes back.
    pub async fn request(
        &mut self,
        method: &str,
        url: &Url,
        body: Option<&str>,
        initiator: Option<&str>,
    ) -> Response {
        let cross_site = initiator.is_some_and(|o| o != origin(url));
        let top_level_get = method == "GET";
        let cookie_header = self.cookie_header(url, cross_site, top_level_get);
        let host = url.host_str().expect("host");
        let port = url.port_or_known_default().expect("port");
        let addr: SocketAddr = format!("{host}:{port}")
            .parse()
            .expect("test hosts are IPs");
        let mut target = url.path().to_owned();
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        let host_header = format!("{host}:{port}");
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("host", host_header.as_bytes()),
            ("accept", super::BROWSER_ACCEPT.as_bytes()),
            ("user-agent", b"gatehouse-test-browser/1.0"),
        ];
        if let Some(c) = &cookie_header {
            headers.push(("cookie", c.as_bytes()));
        }
        if let Some(o) = initiator.filter(|_| method == "POST") {
            headers.push(("origin", o.as_bytes()));
        }
        let payload = body.map(|b| ("application/x-www-form-urlencoded", b.as_bytes().to_vec()));
        let response = send_bytes(addr, method, &target, &headers, payload).await;
        for value in response.headers.get_all("set-cookie") {
            if let Ok(v) = value.to_str() {
                self.store(url, v);
            }
        }
        response
    }

    fn cookie_header(&self, url: &Url, cross_site: bool, top_level_get: bool) -> Option<String> {
        let now = SystemTime::now();
        let host = url.host_str().unwrap_or_default();
        let pairs: Vec<String> = self
            .jar
            .iter()
            .filter(|c| c.host == host && path_matches(url.path(), &c.path))
            .filter(|c| c.expires.is_none_or(|e| e > now))
            .filter(|c| !c.secure || secure_context(url))
            .filter(|c| match (cross_site, c.same_site) {
                (false, _) => true,
                (true, Some(SameSite::None)) => true,
                (true, Some(SameSite::Strict)) => false,
                // Lax, and unset (Chrome's default): top-level GET navigations only.
                (true, _) => top_level_get,
            })
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn store(&mut self, url: &Url, header: &str) {
        let Ok(parsed) = Cookie::parse(header.to_owned()) else {
            return;
        };
        let secure = parsed.secure().unwrap_or(false);
        // Browsers refuse these outright.
        if (secure && !secure_context(url))
            || (parsed.same_site() == Some(SameSite::None) && !secure)
            || (parsed.name().starts_with("__Host-")
                && (!secure || parsed.path() != Some("/") || parsed.domain().is_some()))
        {
            return;
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let path = parsed
            .path()
            .map(String::from)
            .unwrap_or_else(|| default_path(url.path()));
        let expires = match (parsed.max_age(), parsed.expires_datetime()) {
            (Some(age), _) if age.whole_seconds() <= 0 => Some(SystemTime::UNIX_EPOCH),
            (Some(age), _) => {
                Some(SystemTime::now() + Duration::from_secs(age.whole_seconds().unsigned_abs()))
            }
            (None, Some(at)) => Some(SystemTime::from(at)),
            (None, None) => None,
        };
        self.jar
            .retain(|c| !(c.name == parsed.name() && c.host == host && c.path == path));
        self.jar.push(StoredCookie {
            name: parsed.name().to_owned(),
            value: parsed.value().to_owned(),
            host,
            path,
            secure,
            same_site: parsed.same_site(),
            expires,
        });
    }

    /// The value of a live cookie for this host.
    pub fn cookie(&self, host: &str, name: &str) -> Option<String> {
        let now = SystemTime::now();
        self.jar
            .iter()
            .find(|c| c.host == host && c.name == name && c.expires.is_none_or(|e| e > now))
            .map(|c| c.value.clone())
    }

    /// Plants a cookie, as an attacker or another tab would.
    pub fn set_cookie(&mut self, host: &str, name: &str, value: &str) {
        self.jar.retain(|c| !(c.name == name && c.host == host));
        self.jar.push(StoredCookie {
            name: name.to_owned(),
            value: value.to_owned(),
            host: host.to_owned(),
            path: "/".into(),
            secure: false,
            same_site: Some(SameSite::Lax),
            expires: None,
        });
    }
}

/// Every form on the page.
pub fn forms(page: &Page) -> Vec<Form> {
    let form_re = Regex::new(r"(?s)<form\b([^>]*)>(.*?)</form>").expect("regex");
    let input_re = Regex::new(r"<(?:input|select|button)\b([^>]*)>").expect("regex");
    form_re
        .captures_iter(page.body())
        .filter_map(|form| {
            let attrs = attributes(&form[1]);
            let action = attrs
                .iter()
                .find(|(k, _)| k == "action")
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            let method = attrs
                .iter()
                .find(|(k, _)| k == "method")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "get".into());
            let id = attrs
                .iter()
                .find(|(k, _)| k == "id")
                .map(|(_, v)| v.clone());
            let fields = input_re
                .captures_iter(&form[2])
                .filter_map(|input| {
                    let a = attributes(&input[1]);
                    let name = a.iter().find(|(k, _)| k == "name")?.1.clone();
                    let value = a
                        .iter()
                        .find(|(k, _)| k == "value")
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    Some((name, value))
                })
                .collect();
            Some(Form {
                id,
                action: page.url.join(action).ok()?,
                method,
                fields,
            })
        })
        .collect()
}

fn attributes(raw: &str) -> Vec<(String, String)> {
    let re = Regex::new(r#"([a-zA-Z_:-]+)\s*=\s*"([^"]*)""#).expect("regex");
    re.captures_iter(raw)
        .map(|c| {
            (
                c[1].to_ascii_lowercase(),
                html_escape::decode_html_entities(&c[2]).into_owned(),
            )
        })
        .collect()
}

fn encode(fields: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter())
        .finish()
}

pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn secure_context(url: &Url) -> bool {
    url.scheme() == "https" || matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

fn path_matches(request_path: &str, cookie_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path[cookie_path.len()..].starts_with('/')))
}

fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => request_path[..i].to_owned(),
    }
}
