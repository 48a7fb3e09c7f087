//! Integration tests against the real local mail stack (Dovecot and
//! Postfix started by `scripts/stack-up`). One binary, one module per
//! concern; every test works in mailboxes of its own.

// Helpers are `pub` for the sibling modules of this one test binary.
#![allow(unreachable_pub)]

mod connect;
mod corpus;
mod failures;
mod held;
mod helpers;
mod monitoring;
mod oauth;
mod pipeline;
mod threads;
