//! Recognising private email relays from addresses and headers.
//!
//! The domains and marker headers come from `relays-and-helpdesks.md` §1.
//! Recognition only reads: it never changes the message, and the tokens it
//! reports are the addresses exactly as written.

use mail_parser::Message;

/// A relay recognised on a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelayMatch {
    /// `apple`, `firefox`, `duckduckgo`, `simplelogin`, `addy`, `proton`,
    /// or a name from the config's `[relays]` table.
    pub name: String,
    /// The relay address that stands for the customer (From, or Reply-To
    /// when only that is on the relay).
    pub alias: String,
    /// Where a reply must go to reach the customer through the relay: the
    /// Reply-To when present, else the From itself.
    pub reply_token: String,
}

/// The one reply address Firefox Relay gives all its users' forwards.
pub(crate) const FIREFOX_SHARED_REPLY_TO: &str = "replies@relay.firefox.com";

/// Built-in relay domains; a domain also matches its subdomains.
const RELAY_DOMAINS: &[(&str, &str)] = &[
    ("privaterelay.appleid.com", "apple"),
    ("mozmail.com", "firefox"),
    ("relay.firefox.com", "firefox"),
    ("duck.com", "duckduckgo"),
    ("simplelogin.com", "simplelogin"),
    ("simplelogin.co", "simplelogin"),
    ("simplelogin.fr", "simplelogin"),
    ("aleeas.com", "simplelogin"),
    ("slmails.com", "simplelogin"),
    ("silomails.com", "simplelogin"),
    ("slmail.me", "simplelogin"),
    ("8alias.com", "simplelogin"),
    ("8shield.net", "simplelogin"),
    ("dralias.com", "simplelogin"),
    ("passmail.net", "proton"),
    ("passmail.com", "proton"),
    ("passinbox.com", "proton"),
    ("passfwd.com", "proton"),
    ("anonaddy.me", "addy"),
    ("anonaddy.com", "addy"),
    ("addymail.com", "addy"),
    ("addy.io", "addy"),
];

/// Recognises the relay of a message, if any. `extra` maps further
/// domains (from the config) to relay names.
pub fn detect(message: &Message<'_>, extra: &[(String, String)]) -> Option<RelayMatch> {
    let from = crate::mail::from_address(message);
    let reply_to = crate::mail::reply_to_address(message);
    let header_relay = header_marker(message, from.as_deref());

    let (name, alias) = match (&from, &reply_to) {
        // NOTE: addy.io sends a custom domain not verified for sending
        // from its shared mailer address (on an addy domain or not), with
        // the customer's alias in Reply-To: that From stands for every such
        // customer at once, so the alias must be the Reply-To.
        (Some(from), Some(reply_to))
            if !reply_to.eq_ignore_ascii_case(from)
                && (header_relay.as_deref() == Some("addy")
                    || domain_relay(from, extra).as_deref() == Some("addy")) =>
        {
            ("addy".to_owned(), reply_to.clone())
        }
        (Some(from), _) if domain_relay(from, extra).is_some() => {
            (domain_relay(from, extra).unwrap_or_default(), from.clone())
        }
        (Some(from), _) if header_relay.is_some() => {
            (header_relay.clone().unwrap_or_default(), from.clone())
        }
        (_, Some(reply_to)) if domain_relay(reply_to, extra).is_some() => (
            domain_relay(reply_to, extra).unwrap_or_default(),
            reply_to.clone(),
        ),
        _ => return None,
    };
    // NOTE: Firefox Relay's one shared reply address stands for every user
    // at once (relays-and-helpdesks.md §0.6): it never names a correspondent.
    if alias.eq_ignore_ascii_case(FIREFOX_SHARED_REPLY_TO) {
        return None;
    }
    // NOTE: Firefox Relay's forward leg names one Reply-To shared by every
    // user (relays-and-helpdesks.md §1.3); as a token it would make all of
    // them one correspondent.
    let reply_token = reply_to
        .filter(|reply_to| !reply_to.eq_ignore_ascii_case(FIREFOX_SHARED_REPLY_TO))
        .unwrap_or_else(|| alias.clone());
    Some(RelayMatch {
        name,
        alias,
        reply_token,
    })
}

/// Headers that mark relayed mail whatever the domain (custom domains):
/// the relays' own headers, and the envelope sender each relay writes on
/// the alias's domain (`Return-Path`, as the mailbox's server recorded it).
fn header_marker(message: &Message<'_>, from: Option<&str>) -> Option<String> {
    if message.header_raw("X-SimpleLogin-Type").is_some() {
        return Some("simplelogin".to_owned());
    }
    // NOTE: iCloud+ Hide My Email forwards carry it (relays-and-helpdesks.md
    // §1.5); its aliases on icloud.com look like anyone's iCloud address.
    if message.header_raw("X-ICLOUD-HME").is_some() {
        return Some("apple".to_owned());
    }
    if let Some(relay) = from.and_then(|from| verp_relay(message, from)) {
        return Some(relay.to_owned());
    }
    let addy = message
        .header_values("Feedback-ID")
        .filter_map(|value| value.as_text())
        .any(|text| text.to_ascii_lowercase().contains(":anonaddy"));
    if addy {
        return Some("addy".to_owned());
    }
    None
}

/// SimpleLogin's VERP sender `sl.<base32>.<base32>@<alias domain>` and
/// addy.io's `b_<base32>_<base32>@<alias domain>` (relays-and-helpdesks.md
/// §1.1, §1.2), on the From address's own domain.
fn verp_relay(message: &Message<'_>, from: &str) -> Option<&'static str> {
    let return_path = message.header_raw("Return-Path")?;
    let return_path = return_path
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let (local, domain) = return_path.rsplit_once('@')?;
    let (_, from_domain) = from.rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(from_domain) {
        return None;
    }
    // NOTE: Both relays encode an id and a signature; ten characters each
    // keeps ordinary senders such as `b_news_letter@` out.
    let base32 = |text: &str| {
        text.len() >= 10
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphabetic() || (b'2'..=b'7').contains(&byte))
    };
    // NOTE: A signature in base32 has digits (2-7) but for a few in a
    // hundred; two words of letters (`b_newsletters_announcements@`) are an
    // ordinary sender's, whose mail must not switch on relay threading.
    let fields = |rest: &str, separator: char| {
        let mut parts = rest.split(separator);
        parts.next().is_some_and(base32)
            && parts.next().is_some_and(base32)
            && parts.next().is_none()
            && rest.bytes().any(|byte| (b'2'..=b'7').contains(&byte))
    };
    let lower = local.to_ascii_lowercase();
    if lower
        .strip_prefix("sl.")
        .is_some_and(|rest| fields(rest, '.'))
    {
        Some("simplelogin")
    } else if lower
        .strip_prefix("b_")
        .is_some_and(|rest| fields(rest, '_'))
    {
        Some("addy")
    } else {
        None
    }
}

fn domain_relay(address: &str, extra: &[(String, String)]) -> Option<String> {
    let domain = address.rsplit_once('@')?.1.trim().to_ascii_lowercase();
    let matches = |relay_domain: &str| {
        domain == relay_domain
            || domain
                .strip_suffix(relay_domain)
                .is_some_and(|prefix| prefix.ends_with('.'))
    };
    extra
        .iter()
        .find(|(relay_domain, _)| matches(&relay_domain.to_ascii_lowercase()))
        .map(|(_, name)| name.clone())
        .or_else(|| {
            RELAY_DOMAINS
                .iter()
                .find(|(relay_domain, _)| matches(relay_domain))
                .map(|(_, name)| (*name).to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_of(headers: &str) -> Option<RelayMatch> {
        let raw = format!("{headers}\r\n\r\nbody\r\n")
            .replace('\n', "\r\n")
            .replace("\r\r", "\r");
        let message = crate::mail::parse(raw.as_bytes()).expect("parses");
        detect(
            &message,
            &[("mask.example.net".to_owned(), "examplemask".to_owned())],
        )
    }

    #[test]
    fn recognises_each_relay_by_domain() {
        for (from, name) in [
            ("abc_def@privaterelay.appleid.com", "apple"),
            ("k3x9w2q7a@mozmail.com", "firefox"),
            ("label@sub.mozmail.com", "firefox"),
            ("quiet-maple-river@duck.com", "duckduckgo"),
            ("jane.x1@simplelogin.com", "simplelogin"),
            ("jane@passmail.net", "proton"),
            ("shop@john.anonaddy.com", "addy"),
            ("x@mask.example.net", "examplemask"),
        ] {
            let found = relay_of(&format!("From: {from}")).expect(from);
            assert_eq!((found.name.as_str(), found.alias.as_str()), (name, from));
            assert_eq!(found.reply_token, from);
        }
        assert_eq!(relay_of("From: a@notduck.com"), None);
        assert_eq!(relay_of("From: a@example.org"), None);
    }

    #[test]
    fn reply_to_is_the_token_and_headers_mark_custom_domains() {
        let found =
            relay_of("From: mailer@anonaddy.me\nReply-To: alias+token@anonaddy.me").expect("addy");
        assert_eq!(
            (found.alias.as_str(), found.reply_token.as_str()),
            ("alias+token@anonaddy.me", "alias+token@anonaddy.me"),
            "the shared mailer address is not the customer"
        );
        let custom =
            relay_of("From: me@my-own-domain.example\nX-SimpleLogin-Type: Reply").expect("sl");
        assert_eq!(custom.name, "simplelogin");
        let feedback =
            relay_of("From: me@custom.example\nFeedback-ID: R:2dc1f3:anonaddy").expect("addy");
        assert_eq!(feedback.name, "addy");
        let hme = relay_of(
            "From: \"Shop\" <no-reply_at_shop_example_ysntf8b7kgdz64_28g48899@icloud.com>\nX-ICLOUD-HME: p=clawed-trade@icloud.com; d=; f=x; r=to; s=no-reply@shop.example",
        )
        .expect("apple");
        assert_eq!(hme.name, "apple");
        let sl_verp =
            relay_of("Return-Path: <sl.mfrggzdfmztwq2lk.nbswy3dpfqqho33s@custom.example>\nFrom: me@custom.example")
                .expect("simplelogin");
        assert_eq!(sl_verp.name, "simplelogin");
        let addy_verp =
            relay_of("Return-Path: <b_mfrggzdfmztwq2lk_nbswy3dpfqqho33s@custom.example>\nFrom: me@custom.example")
                .expect("addy");
        assert_eq!(addy_verp.name, "addy");
        for ordinary in [
            "Return-Path: <sl.mfrggzdfmztwq2lk.nbswy3dpfqqho33s@other.example>\nFrom: me@custom.example",
            "Return-Path: <sl.team@custom.example>\nFrom: me@custom.example",
            "Return-Path: <b_news_letter@custom.example>\nFrom: me@custom.example",
            "Return-Path: <b_newsletters_announcements@custom.example>\nFrom: me@custom.example",
            "Return-Path: <sl.newsletter.subscribers@custom.example>\nFrom: me@custom.example",
            // The shared Firefox Relay address names no one.
            "From: Jane <jane@example.org>\nReply-To: replies@relay.firefox.com",
            "From: \"x [via Relay]\" <replies@relay.firefox.com>",
            "Return-Path: <bounces+123@custom.example>\nFrom: me@custom.example",
            "Return-Path: <b_mfrggzdfmztwq2lk_nbswy3dpfqqho33s_x@custom.example>\nFrom: me@custom.example",
        ] {
            assert_eq!(relay_of(ordinary), None, "{ordinary}");
        }
        let shared = relay_of(
            "From: \"shop@example.org [via Relay]\" <k3x9w2q7a@mozmail.com>\nReply-To: replies@relay.firefox.com",
        )
        .expect("firefox");
        assert_eq!(shared.reply_token, "k3x9w2q7a@mozmail.com");
        let quoted = relay_of("From: \"jane.doe.\"@mozmail.com").expect("firefox");
        assert_eq!(
            (quoted.alias.as_str(), quoted.reply_token.as_str()),
            ("\"jane.doe.\"@mozmail.com", "\"jane.doe.\"@mozmail.com")
        );
        let reply_only =
            relay_of("From: Jane <jane@example.org>\nReply-To: mask@mozmail.com").expect("reply");
        assert_eq!(
            (reply_only.name.as_str(), reply_only.alias.as_str()),
            ("firefox", "mask@mozmail.com")
        );
    }
}
