//! Tracing: each connection attempt runs in a `connect` span naming the server, and each
//! `acquire` in an `acquire` span that records the slot leased. A small hand-written
//! subscriber, installed for this test binary alone, collects the spans.

mod support;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callosum_client::RovingClient;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span's name and its fields, as text.
#[derive(Debug, Clone, Default)]
struct SpanSeen {
    name: &'static str,
    fields: Vec<(String, String)>,
}

impl SpanSeen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Visit for SpanSeen {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.fields
            .push((field.name().to_owned(), format!("{value:?}")));
    }
}

/// Keeps every span, by id (ids are indices + 1).
#[derive(Debug, Default, Clone)]
struct Collect(Arc<Mutex<Vec<SpanSeen>>>);

impl Collect {
    fn spans(&self) -> Vec<SpanSeen> {
        self.0.lock().expect("lock").clone()
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut seen = SpanSeen {
            name: span.metadata().name(),
            ..SpanSeen::default()
        };
        span.record(&mut seen);
        let mut spans = self.0.lock().expect("lock");
        spans.push(seen);
        Id::from_u64(spans.len() as u64)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.0.lock().expect("lock");
        if let Some(seen) = spans.get_mut(span.into_u64() as usize - 1) {
            values.record(seen);
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test]
async fn connects_and_acquires_run_in_spans_naming_the_server_and_the_slot() {
    let collect = Collect::default();
    tracing::subscriber::set_global_default(collect.clone()).expect("the only subscriber");
    let (addr, _server) = support::start_server();
    let client = RovingClient::builder()
        .server(addr.to_string())
        .max_slots(1)
        .roving_interval(Duration::from_millis(5))
        .acquire_timeout(support::BOUND)
        .build()
        .expect("valid settings");
    let lease = client.acquire().await.expect("a connection");
    assert_eq!(lease.slot(), 0);
    drop(lease);
    let spans = collect.spans();
    let connect = spans
        .iter()
        .find(|s| s.name == "connect" && s.field("slot") == Some("0"))
        .unwrap_or_else(|| panic!("a connect span that read slot 0: {spans:?}"));
    assert_eq!(connect.field("server"), Some(addr.to_string().as_str()));
    let acquire = spans
        .iter()
        .find(|s| s.name == "acquire")
        .unwrap_or_else(|| panic!("an acquire span: {spans:?}"));
    assert_eq!(acquire.field("slot"), Some("0"));
    assert_eq!(acquire.field("server"), Some(addr.to_string().as_str()));
}
