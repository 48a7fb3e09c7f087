//! Fuzzes the classifier and the header summary with arbitrary bytes: no
//! input may panic, and every input gets exactly one decision.
#![no_main]

use deskbridge::classify::{self, Action, Rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rules = Rules {
        own_domain: Some("company.test".to_owned()),
        max_message_bytes: Some(4 * 1024 * 1024),
        helpdesk_addresses: vec!["intake@helpdesk.test".to_owned()],
        ..Rules::default()
    };
    let result = classify::classify(data, &rules);
    assert_eq!(result.decision.reason.is_none(), result.decision.action == Action::Forward);
    if let Some(message) = deskbridge::mail::parse(data) {
        let _ = deskbridge::mail::summarize(&message);
    }
});
