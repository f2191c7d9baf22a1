//! Placeholder: the browser model arrives with the login broker tests.
