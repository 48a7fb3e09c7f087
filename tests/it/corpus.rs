//! The classifier against the fixture corpus in `tests/fixtures/classify/`:
//! each `NAME.eml` must classify as `NAME.json` says, with LF and with CRLF
//! line ends. The crypto fixtures are made by real tools
//! (`scripts/make-fixtures`). No mail stack is needed here.

use std::path::{Path, PathBuf};

use deskbridge::classify::{self, Rules};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classify")
}

/// What `deskbridge inspect` prints for these bytes, as JSON.
fn inspect(bytes: &[u8]) -> serde_json::Value {
    let classification = classify::classify(bytes, &Rules::default());
    let message_id =
        deskbridge::mail::parse(bytes).and_then(|message| message.message_id().map(str::to_owned));
    let line = deskbridge::report::inspect_json("case", &classification, message_id.as_deref());
    serde_json::from_str(&line).expect("inspect prints JSON")
}

fn to_crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 20);
    for (index, byte) in bytes.iter().enumerate() {
        if *byte == b'\n' && (index == 0 || bytes[index - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(*byte);
    }
    out
}

/// Every case gives the expected decision, reason, class, relay, alias,
/// token and Message-ID, in both line-end forms. Mismatches are written
/// to `NAME.failed` beside the case.
#[test]
fn every_fixture_classifies_as_expected() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the fixture corpus exists (bash scripts/make-fixtures)")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    for case in &cases {
        let expected_path = case.with_extension("json");
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&expected_path)
                .unwrap_or_else(|err| panic!("{}: {err}", expected_path.display())),
        )
        .unwrap_or_else(|err| panic!("{}: {err}", expected_path.display()));
        let raw = std::fs::read(case).expect("read case");
        let mut report = String::new();
        for (form, bytes) in [("LF", raw.clone()), ("CRLF", to_crlf(&raw))] {
            let got = inspect(&bytes);
            for (key, want) in expected.as_object().expect("expected JSON is an object") {
                if got.get(key) != Some(want) {
                    report.push_str(&format!(
                        "{form} {key}: expected {want}, got {}\n",
                        got.get(key).unwrap_or(&serde_json::Value::Null)
                    ));
                }
            }
            if !report.is_empty() {
                report.push_str(&format!("{form} full output: {got}\n"));
            }
        }
        let failed_path = case.with_extension("failed");
        if report.is_empty() {
            let _ = std::fs::remove_file(&failed_path);
        } else {
            std::fs::write(&failed_path, &report).expect("write .failed");
            failures.push(format!("{}:\n{report}", case.display()));
        }
    }
    // NOTE: The corpus has 126 cases; a lower count means some were lost
    // (renamed, or an extension changed) and would pass unseen. Raise this
    // with every case added.
    assert!(
        126 <= cases.len(),
        "the corpus has only {} cases",
        cases.len()
    );
    // And no expectation without its case.
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "json") {
            assert!(
                path.with_extension("eml").exists(),
                "{} has no .eml case",
                path.display()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// `deskbridge inspect` itself, as a person runs it on saved files: one
/// JSON line per file, from a file or standard input, in the same shape
/// as the corpus expects; a file it cannot read makes it exit 1 after the
/// others.
#[test]
fn the_inspect_command_classifies_files_and_standard_input() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let pgp = corpus_dir().join("pgp-asc-attachment-message.eml");
    let plain = corpus_dir().join("html-multipart-alternative.eml");
    let missing = corpus_dir().join("no-such-case.eml");
    let run = Command::new(env!("CARGO_BIN_EXE_deskbridge"))
        .arg("inspect")
        .args([&pgp, &missing, &plain])
        .output()
        .expect("run inspect");
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(String::from_utf8_lossy(&run.stderr).contains("no-such-case.eml"));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let expected = |case: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(case.with_extension("json")).expect("expectation");
        serde_json::from_str(&text).expect("JSON")
    };
    for (line, case) in lines.iter().zip([&pgp, &plain]) {
        assert_eq!(line["file"], case.display().to_string());
        assert_eq!(line["decision"], expected(case)["decision"], "{line}");
        assert_eq!(line["reason"], expected(case)["reason"], "{line}");
    }
    assert_eq!(lines[0]["decision"], "hold");

    let mut piped = Command::new(env!("CARGO_BIN_EXE_deskbridge"))
        .args(["inspect", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run inspect -");
    piped
        .stdin
        .take()
        .expect("stdin")
        .write_all(&std::fs::read(&pgp).expect("read case"))
        .expect("write stdin");
    let out = piped.wait_with_output().expect("inspect - ends");
    assert_eq!(out.status.code(), Some(0));
    let line: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii_end()).expect("JSON");
    assert_eq!(line["decision"], "hold");
    assert_eq!(line["reason"], lines[0]["reason"]);
}

/// Truncated, binary and deeply nested input never panics (a panic here
/// fails the test); input with no header at all is held as unparseable.
#[test]
fn hostile_input_never_panics() {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for case in std::fs::read_dir(corpus_dir()).expect("corpus").flatten() {
        let path = case.path();
        if path.extension().is_some_and(|ext| ext == "eml") {
            let raw = std::fs::read(&path).expect("read");
            // Every prefix length on a coarse grid, to cut inside headers,
            // boundaries and base64.
            let step = (raw.len() / 25).max(1);
            inputs.extend((0..raw.len()).step_by(step).map(|cut| raw[..cut].to_vec()));
        }
    }
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for size in [1, 7, 64, 4096, 65_536] {
        let noise: Vec<u8> = (0..size)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        inputs.push(noise);
    }
    let mut deep_multipart = String::from("From: a@b.test\r\n");
    for level in 0..200 {
        deep_multipart.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n"
        ));
    }
    inputs.push(deep_multipart.into_bytes());
    let mut deep_rfc822 = String::from("From: a@b.test\r\n");
    for _ in 0..150 {
        deep_rfc822.push_str("Content-Type: message/rfc822\r\n\r\nFrom: a@b.test\r\n");
    }
    inputs.push(deep_rfc822.into_bytes());
    // Base64-encoded nesting, which mail-parser stops decoding after three
    // levels and the classifier re-parses itself.
    let mut nested = b"From: a@b.test\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIAGCSqGSIb3DQEHA6CA\r\n".to_vec();
    for _ in 0..10 {
        let encoded = base64(&nested);
        nested = format!(
            "From: a@b.test\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
        )
        .into_bytes();
    }
    let deep_result = classify::classify(&nested, &Rules::default());
    assert_eq!(deep_result.decision.action, classify::Action::Hold);
    inputs.push(nested);

    for input in &inputs {
        classify::classify(input, &Rules::default());
    }
    for headerless in [&b""[..], b"\r\n\r\nno header above\r\n"] {
        let result = classify::classify(headerless, &Rules::default());
        assert_eq!(result.decision.action, classify::Action::Hold);
        assert_eq!(
            result.decision.reason,
            Some(classify::Reason::Unparseable),
            "{:?}",
            String::from_utf8_lossy(headerless)
        );
    }
    assert!(1000 < inputs.len(), "only {} inputs", inputs.len());
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (index, chunk) in bytes.chunks(3).enumerate() {
        if 0 < index && index % 19 == 0 {
            out.push_str("\r\n");
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (position, shift) in [18, 12, 6, 0].iter().enumerate() {
            if position <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
