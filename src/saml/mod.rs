//! SAML 2.0 identity providers: gatehouse as a service provider (SP) brokering SAML IdPs into
//! the same users, orgs, roles, sessions and audit trail as OIDC ones.
//!
//! - [`binding`], [`screen`]: what every message passes before any XML library or signature
//!   check sees it (bounded decoding; a strict shape screen: no DTDs, comments, …);
//! - [`metadata`]: the IdP's metadata; [`idp`]: one IdP at run time (metadata refresh, the
//!   `AuthnRequest`, verification);
//! - [`response`]: a Response from the form field to verified facts, through [`facts`] (the
//!   document's shape: signature wrapping), [`verify`] (XML-DSig by samael over xmlsec1) and
//!   [`decrypt`] (`EncryptedAssertion`);
//! - [`rules`]: what a verified Response must show (audience, destination, time, …);
//! - [`messages`], [`logout`]: what gatehouse writes (`AuthnRequest`, SP metadata, single
//!   logout).
//!
//! The handlers are in `broker::saml`. Signature checking needs libxml2 and libxmlsec1: it is
//! built with the cargo feature `saml`; without it, configuration refuses `kind = "saml"`.

pub mod binding;
pub mod facts;
pub mod idp;
pub mod logout;
pub mod messages;
pub mod metadata;
pub mod response;
pub mod rules;
pub mod screen;

#[cfg(feature = "saml")]
pub mod decrypt;
#[cfg(feature = "saml")]
pub mod verify;

#[cfg(not(feature = "saml"))]
mod unbuilt;
#[cfg(not(feature = "saml"))]
pub use unbuilt::{decrypt, verify};
