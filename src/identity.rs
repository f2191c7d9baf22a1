//! Who the caller is, as the decision and the upstream see it.

use std::sync::{Arc, Mutex};

use http::{HeaderName, HeaderValue};
use uuid::Uuid;

use crate::strength::Authentication;

/// Every header with this prefix is gatehouse's to set: inbound copies are always removed
/// (see [`poses_as_identity_header`]).
pub const HEADER_PREFIX: &str = "x-gatehouse-";
pub const USER_ID_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-user-id");
pub const EMAIL_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-email");
pub const ORG_ID_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-org-id");
pub const ROLES_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-roles");
pub const IMPERSONATOR_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-impersonator-id");
pub const JWT_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-jwt");

/// A bearer token whose signature and lifetime were verified (built from its claims in
/// [`crate::bearer`]). Route rules are checked on these claims by the decision.
#[derive(Debug)]
pub struct VerifiedToken {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub expires_at: i64,
    /// It carries ID-token-only claims (`nonce`, `at_hash`, `c_hash`, claim `typ: ID`) and
    /// is not declared an access token (`typ: at+jwt`): never accepted as a bearer token.
    pub looks_like_id_token: bool,
    /// `x-gatehouse-issuer`, `-subject` and `-scope`, computed once.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `sid` for the minted token: a prefix of the token's hash.
    pub sid: Arc<str>,
    /// The token minted for this bearer token's user, cached.
    pub minted: Arc<MintSlot>,
    /// What the token says about how its user authenticated.
    pub auth: Arc<Authentication>,
    /// `(iss, sub)`, shared with the user cache's key, so a lookup allocates nothing.
    pub(crate) identity: Arc<(String, String)>,
    /// The key it was verified with: once the issuer withdraws it, the cached verification
    /// no longer counts.
    pub(crate) kid: Option<String>,
}

/// A signed-in user behind a valid session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Uuid,
    pub email: String,
    pub org_id: Option<Uuid>,
    /// Sorted, deduplicated.
    pub roles: Vec<String>,
    pub enabled: bool,
    pub impersonator_id: Option<Uuid>,
}

impl Identity {
    pub fn has_any_role(&self, wanted: &[String]) -> bool {
        wanted.iter().any(|w| self.roles.iter().any(|r| r == w))
    }

    /// The headers the upstream receives on allow. Rendered once per cached session, not
    /// per check.
    pub fn upstream_headers(&self) -> IdentityHeaders {
        IdentityHeaders::render(self)
    }
}

/// The identity headers of one user, in [`IDENTITY_HEADER_NAMES`] order, and only those with
/// a value: no org, no roles, not impersonating: no header (a client-sent copy is removed all
/// the same). The values live in one string, so a cached session holds one small allocation
/// for all of them, and a check copies them out as slices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    values: Box<str>,
    /// Where each name's value ends in `values` (it starts where the previous one ends); an
    /// empty value is a header not sent.
    ends: [u32; 5],
}

impl IdentityHeaders {
    fn render(identity: &Identity) -> Self {
        let mut buf = Uuid::encode_buffer();
        let mut uuid = |id: Uuid| id.hyphenated().encode_lower(&mut buf).to_owned();
        let roles = identity.roles.join(",");
        let parts = [
            Some(uuid(identity.user_id)),
            Some(identity.email.clone()),
            identity.org_id.map(&mut uuid),
            Some(roles),
            identity.impersonator_id.map(&mut uuid),
        ];
        let mut values = String::new();
        let mut ends = [0; 5];
        for (end, part) in ends.iter_mut().zip(parts) {
            // Emails and role names are validated where they are stored; a value a header
            // cannot carry is left out rather than mangled.
            if let Some(part) = part.filter(|p| HeaderValue::from_str(p).is_ok()) {
                values.push_str(&part);
            }
            *end = u32::try_from(values.len()).unwrap_or(u32::MAX);
        }
        Self {
            values: values.into_boxed_str(),
            ends,
        }
    }

    /// Every header to send: its name and its value, a valid header value.
    pub fn iter(&self) -> impl Iterator<Item = (&'static HeaderName, &str)> + '_ {
        let mut start = 0;
        IDENTITY_HEADER_NAMES
            .iter()
            .zip(self.ends)
            .filter_map(move |(name, end)| {
                let end = usize::try_from(end).unwrap_or(usize::MAX);
                let value = self.values.get(start..end).unwrap_or_default();
                start = end;
                (!value.is_empty()).then_some((name, value))
            })
    }
}

/// The names of [`IdentityHeaders`], in the order of its values (a `static`, so that the
/// iterator can hand out `'static` borrows).
static IDENTITY_HEADER_NAMES: [HeaderName; 5] = [
    USER_ID_HEADER,
    EMAIL_HEADER,
    ORG_ID_HEADER,
    ROLES_HEADER,
    IMPERSONATOR_HEADER,
];

/// Whether a client header could pass for one of gatehouse's: its name, with `_` read as `-`
/// and ASCII case ignored, starts with `x-gatehouse-`. CGI, WSGI and PHP expose both
/// `x_gatehouse_user_id` and `x-gatehouse-user-id` as `HTTP_X_GATEHOUSE_USER_ID`, and some
/// proxies fold `_` into `-`.
pub fn poses_as_identity_header(name: &str) -> bool {
    let prefix = HEADER_PREFIX.as_bytes();
    name.len() >= prefix.len()
        && name.bytes().zip(prefix).all(|(b, want)| {
            let b = if b == b'_' {
                b'-'
            } else {
                b.to_ascii_lowercase()
            };
            b == *want
        })
}

/// A caller with a local identity, and where the token minted for them is cached.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: Arc<SignedIn>,
    /// `sid` of the minted token: a prefix of the session's (or bearer token's) hash.
    pub sid: Arc<str>,
    pub minted: Arc<MintSlot>,
    /// When the credential ends (the session's absolute expiry, the bearer token's `exp`): a
    /// minted token never outlives it.
    pub expires_at: i64,
    /// How the caller authenticated (for step-up rules).
    pub auth: Arc<Authentication>,
}

/// The token minted for one session or bearer token, re-used until a third of its lifetime is
/// left. Empty until the first allow that needs one; boxed, so that a session on a deployment
/// that mints nothing holds one word for it.
#[derive(Debug, Default)]
pub struct MintSlot(pub Mutex<Option<Box<Minted>>>);

#[derive(Debug, Clone)]
pub struct Minted {
    /// The `SignedIn` it was minted for: a revocation replaces the `SignedIn`, and then the
    /// claims must be signed again. Held (not just its address), so no later one can reuse it.
    pub for_user: Arc<SignedIn>,
    pub value: HeaderValue,
    pub expires_at: i64,
}

/// What the session cookie says about the caller.
#[derive(Debug, Clone)]
pub enum SessionCaller {
    /// No session cookie, or one that is unknown, expired, revoked, duplicated or malformed.
    Anonymous,
    User(Principal),
    /// The store failed and the session was not cached: we cannot tell, so we must not allow.
    Unavailable,
}

/// What `Authorization: Bearer` says about the caller (looked at on bearer routes only).
#[derive(Debug, Clone)]
pub enum BearerCaller {
    /// No bearer token.
    Absent,
    /// A token that cannot be accepted: why.
    Invalid(String),
    /// A verified token, and its local user if `(iss, sub)` is one.
    Token {
        token: Arc<VerifiedToken>,
        principal: Option<Principal>,
    },
    /// The issuer's keys or the store cannot be reached: 503.
    Unavailable,
}

/// Everything the gate found out about the caller of one check.
#[derive(Debug, Clone)]
pub struct Caller {
    pub session: SessionCaller,
    pub bearer: BearerCaller,
}

impl Caller {
    pub const ANONYMOUS: Self = Self {
        session: SessionCaller::Anonymous,
        bearer: BearerCaller::Absent,
    };

    pub fn session(session: SessionCaller) -> Self {
        Self {
            session,
            bearer: BearerCaller::Absent,
        }
    }
}

/// An identity plus its precomputed upstream headers.
#[derive(Debug)]
pub struct SignedIn {
    pub identity: Identity,
    pub headers: IdentityHeaders,
}

impl SignedIn {
    pub fn new(identity: Identity) -> Self {
        let headers = identity.upstream_headers();
        Self { identity, headers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_headers_carry_the_identity() {
        let id = Identity {
            user_id: Uuid::nil(),
            email: "a@acme.test".into(),
            org_id: None,
            roles: vec!["admin".into(), "dev".into()],
            enabled: true,
            impersonator_id: None,
        };
        let headers = id.upstream_headers();
        let get = |n: &HeaderName| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_owned())
        };
        assert_eq!(
            get(&USER_ID_HEADER).as_deref(),
            Some("00000000-0000-0000-0000-000000000000")
        );
        assert_eq!(get(&EMAIL_HEADER).as_deref(), Some("a@acme.test"));
        assert_eq!(
            get(&ORG_ID_HEADER),
            None,
            "no org: no header, not an empty one"
        );
        assert_eq!(get(&ROLES_HEADER).as_deref(), Some("admin,dev"));
        assert_eq!(get(&IMPERSONATOR_HEADER), None);
        let in_org = Identity {
            org_id: Some(Uuid::from_u128(7)),
            roles: Vec::new(),
            impersonator_id: Some(Uuid::from_u128(9)),
            ..id.clone()
        };
        let headers: Vec<(String, String)> = in_org
            .upstream_headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_owned()))
            .collect();
        assert_eq!(
            headers,
            [
                (
                    "x-gatehouse-user-id",
                    "00000000-0000-0000-0000-000000000000"
                ),
                ("x-gatehouse-email", "a@acme.test"),
                ("x-gatehouse-org-id", "00000000-0000-0000-0000-000000000007"),
                (
                    "x-gatehouse-impersonator-id",
                    "00000000-0000-0000-0000-000000000009"
                ),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned())),
            "no roles: no roles header"
        );
        // A value a header cannot carry is left out, and the others keep their places.
        let odd = Identity {
            email: "a\nb@acme.test".into(),
            ..in_org.clone()
        };
        let names: Vec<&str> = odd
            .upstream_headers()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "x-gatehouse-user-id",
                "x-gatehouse-org-id",
                "x-gatehouse-impersonator-id"
            ]
        );
        assert!(id.has_any_role(&["ops".into(), "dev".into()]));
        assert!(!id.has_any_role(&["ops".into()]));
    }

    #[test]
    fn identity_header_lookalikes() {
        let cases = [
            ("x-gatehouse-user-id", true),
            ("x_gatehouse_user_id", true),
            ("X_GATEHOUSE_ROLES", true),
            ("x-gatehouse_org_id", true),
            ("x_gatehouse-email", true),
            ("x-gatehouse-", true),
            ("x-gatehouse", false),
            ("x-gatehousex", false),
            ("xx-gatehouse-user-id", false),
            ("x.gatehouse.user.id", false),
            ("cookie", false),
        ];
        for (name, spoof) in cases {
            assert_eq!(poses_as_identity_header(name), spoof, "{name}");
        }
    }
}
