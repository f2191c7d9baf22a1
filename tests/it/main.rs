//! The integration tests: one binary, so the crate and its dependencies link once. Each module
//! is one suite (`cargo test --test it login::` runs the login suite); `support` is the
//! harness they share: real processes (gatehouse, Envoy, nginx, the OpenID Provider), a fresh
//! database per test, and clients that send exactly what they are told.

#[macro_use]
mod support;

mod admin_api;
mod app_tokens;
mod cli;
mod deploy;
mod envoy_e2e;
mod faults;
mod floods;
mod forward_auth;
mod grpc;
mod hardening;
mod local_signin;
mod login;
mod login_bench;
mod nginx;
mod production;
mod races;
mod reload;
// SAML needs the `saml` feature (scripts/test turns it on).
#[cfg(feature = "saml")]
mod saml;
#[cfg(feature = "saml")]
mod saml_idp;
mod signin;
mod soak;
mod store;
mod tokens;
