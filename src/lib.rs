//! gatehouse: external authorization for Envoy (gRPC ext_authz) and other proxies
//! (HTTP forward-auth), plus an OIDC login broker in front of the company's identity provider.
//!
//! On every request the proxy asks [`server::grpc`] (or [`server::forward_auth`]) whether to
//! let it through. [`gate::Gate`] normalizes the path, finds the route, identifies the caller
//! from the session cookie if the route needs it, and [`decision::decide`] answers allow (with
//! identity headers for the upstream), deny, or redirect to login.
//!
//! # Layout
//!
//! Layers from the top down. An import points down or sideways within a layer, and no files
//! import each other in a circle. One arrow points up, by design: [`config`] gathers the
//! sections and checks them with their owners' code, so it reads `apps::config` (the
//! `[[client]]` types) and calls `apps::clients::validate`, and reads `local::config` (`[local]`,
//! `[email]`) and `local::methods`; these files are leaves that import nothing from the flows
//! (as [`policy`] owns `[[route]]` in `policy::config`).
//!
//! | layer | module | job |
//! |---|---|---|
//! | entry | `main.rs`, [`cli`] | parse the command line, load config, run; the admin commands print [`admin`]'s results |
//! | edges | [`server`] | every listener, and the only code that speaks HTTP or gRPC: `grpc` (ext_authz), `forward_auth` (`/authz`), `http` (the broker's `/auth/*` handlers), `apps` (the apps' handlers), `respond` (a [`web::Reply`] → a response), `admin` (API, audit page, metrics), `reload` (SIGHUP) |
//! | operations | [`admin`] | the admin operations behind both the CLI and `/admin/v1`; the audit query |
//! | flows | [`broker`] | browser login against OIDC and SAML IdPs (`saml`: login start, ACS, SP metadata, single logout): `realm` (home-realm discovery), `provider` (discovery, authorize URL, code exchange, userinfo), `id_token` (ID-token validation), `redirect` (`rd` rules), `backchannel` and `logout_token` (back-channel logout), `impersonation`, `error` |
//! | | [`local`] | sign-in without an IdP: `flow` (the steps), `browser` and `account` (pages), `api` (`/auth/v1`), `methods` (which an address may use), `password` (argon2id, strength), `totp`, `codes`, `mailer` (SMTP), `config` (`[local]`, `[email]`) |
//! | | [`saml`] | SAML 2.0 IdPs (gatehouse as the SP): `binding` (bounded Redirect/POST decoding), `screen` (the strict XML shape check before any parser), `metadata` (the IdP's), `idp` (one IdP at run time: metadata refresh, AuthnRequest, verification), `response` (a Response from the form to verified facts), `facts` (the document's shape against signature wrapping; reading an assertion), `verify` (XML-DSig via samael/xmlsec1, feature `saml`), `decrypt` (`EncryptedAssertion`), `rules` (what a verified Response must show: pure), `messages` and `logout` (what gatehouse writes and single logout); its handlers are `broker::saml` |
//! | | [`apps`] | authorization server for `[[client]]` apps: `authorize`, `token` (code and refresh grants, revocation), `pkce`, `clients` (registry, redirect URIs), `config` (`[[client]]`, `[app_tokens]`) |
//! | | [`web`] | what flows and edges share, with no web framework: the reply, the requester, query/form parameters |
//! | check | [`gate`] | the check engine used by both edges: request → caller → [`decision::decide`] → verdict |
//! | callers | [`session`] | opaque tokens, cookies, the session cache, revocation sync |
//! | | [`bearer`] | bearer-JWT callers: verification cache, issuer keys, `(iss, sub)` → user |
//! | | [`tokens`] | the minted upstream token (`x-gatehouse-jwt`) and app access tokens: shared keys, JWKS |
//! | | [`limits`] | per-address and per-account token buckets against floods and guessing |
//! | | [`metrics`] | Prometheus counters and histograms (their label sets given by their owners) |
//! | store | [`store`] | sqlx over SQLite or PostgreSQL, one file per table group; `store::sql` holds what they share |
//! | rules | [`provisioning`] | what an IdP's word about an email may do (link, org placement), role mapping: pure |
//! | | [`config`] | the TOML file + `GATEHOUSE_*` overlay; gathers the sections, validates what spans them; `config::error` is its one error |
//! | | [`decision`] | `decide()`: pure; also renders denials (status, headers, body); its tables in `decision/tests.rs` |
//! | | [`policy`] | route table and path normalization: pure, table-tested; `policy::config` is `[[route]]` |
//! | values | [`identity`], [`request`], [`strength`] | who the caller is (a session's user, a verified bearer token) and the `x-gatehouse-*` headers; the request under check; how strongly the caller authenticated and what a route asks (pure) |
//! | | [`jwt`], [`email`], [`pages`], [`clock`] | verifying other parties' JWTs; canonical email addresses; the HTML pages; wall-clock time |
//!
//! Where a behaviour lives: a route rule → `policy`; why a check was allowed or denied →
//! `decision`; how a session is found and cached → `session`; a login step → `broker`; an app
//! token → `apps`; anything on the wire → `server`; anything in the database → `store`.
//!
//! Pure parts take plain data and `now`; I/O lives at the edges. Each layer has its own
//! `thiserror` enum whose message includes its cause, so `main` and the logs print it once.

#![forbid(unsafe_code)]

pub mod admin;
pub mod apps;
pub mod bearer;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decision;
pub mod email;
pub mod gate;
pub mod identity;
pub mod jwt;
pub mod limits;
pub mod local;
pub mod metrics;
pub mod pages;
pub mod policy;
pub mod provisioning;
pub mod request;
pub mod saml;
pub mod server;
pub mod session;
pub mod store;
pub mod strength;
pub mod tokens;
pub mod web;
