//! Forward-auth request building from `Host` and `X-Forwarded-*`. Properties: headers from an
//! untrusted peer never decide anything (the client address is the peer, the target the
//! request's own); a trusted proxy's client address is one of the forwarded addresses or the
//! peer.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use gatehouse::server::forward_auth::{client_ip, original_request};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 7] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-uri",
    "x-forwarded-proto",
    "x-forwarded-method",
    "accept",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let mut headers = HeaderMap::new();
    for (i, value) in rest.split(|b| *b == 0).take(10).enumerate() {
        let name = NAMES[(i + usize::from(selector)) % NAMES.len()];
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), v);
        }
    }
    let trusted = ["127.0.0.1/32".parse().unwrap()];
    let proxy = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let stranger = IpAddr::V4(Ipv4Addr::new(203, 0, 113, selector));
    let from_stranger = original_request("GET", "/authz/x", headers.clone(), stranger, &trusted);
    if let Ok(r) = &from_stranger {
        assert_eq!(r.client_ip, Some(stranger));
        assert_eq!(r.path, "/x", "an untrusted peer's X-Forwarded-Uri is ignored");
    }
    assert_eq!(client_ip(&headers, stranger, &trusted), stranger);
    let via_proxy = client_ip(&headers, proxy, &trusted);
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    assert!(via_proxy == proxy || forwarded.contains(&via_proxy), "{via_proxy} from {forwarded:?}");
    let _ = original_request("GET", "/authz", headers, proxy, &trusted);
});
