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
//! | module | job |
//! |---|---|
//! | [`admin`] | the admin operations behind both the CLI and `/admin/v1`; the audit query |
//! | [`config`] | typed configuration: TOML file + `GATEHOUSE_*` overlay, validation |
//! | [`policy`] | route table and path normalization: pure, table-tested |
//! | [`decision`] | `decide()`: pure; also renders denials (status, headers, body) |
//! | [`request`] | the request under check, as plain data |
//! | [`identity`] | who the caller is; the `x-gatehouse-*` headers |
//! | [`email`] | email addresses in the one canonical form they are stored and compared in |
//! | [`provisioning`] | what an IdP's word about an email may do (link, org placement): pure |
//! | [`strength`] | how strongly a caller authenticated; step-up requirements: pure |
//! | [`limits`] | per-address and per-account token buckets against floods and guessing |
//! | [`gate`] | the check engine used by both edges |
//! | [`session`] | opaque tokens, cookies, the session cache, revocation sync |
//! | [`jwt`] | verifying other parties' JWTs: accepted algorithms, JWKS fetch and cache |
//! | [`bearer`] | bearer-JWT callers: verification cache, issuer keys, `(iss, sub)` → user |
//! | [`tokens`] | the minted upstream token (`x-gatehouse-jwt`): shared keys, JWKS, caching |
//! | [`store`] | sqlx over SQLite or PostgreSQL: users, orgs, sessions, login state, audit |
//! | [`broker`] | OIDC login: home-realm discovery, code flow + PKCE, callback, provisioning, logout |
//! | [`apps`] | authorization server for `[[client]]` apps: authorize, token, revoke; refresh rotation |
//! | [`server`] | listeners: gRPC ext_authz, HTTP (`/authz`, `/auth/*`), admin |
//! | [`metrics`] | Prometheus counters and histograms |
//! | [`pages`] | the few HTML pages |
//! | [`cli`] | command-line parsing and the admin commands |
//! | [`clock`] | the one place that reads wall-clock time |
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
pub mod metrics;
pub mod pages;
pub mod policy;
pub mod provisioning;
pub mod request;
pub mod server;
pub mod session;
pub mod store;
pub mod strength;
pub mod tokens;
