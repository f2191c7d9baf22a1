//! The TOML config loader. Property: no panic; a config that loads shows the same routes
//! when loaded again (validation is deterministic).
#![no_main]

use gatehouse::config::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(settings) = Settings::from_toml(text, Vec::new()) {
        let again = Settings::from_toml(text, Vec::new()).expect("loads twice");
        assert_eq!(settings.routes.len(), again.routes.len());
        assert_eq!(settings.idps.len(), again.idps.len());
    }
});
