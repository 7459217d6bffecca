//! Repeated warnings, limited: a `tracing` layer around the writer layer that lets the first
//! warning (or error) of a kind through, counts the identical ones that follow within
//! [`WINDOW`], and writes one summary line with the count once the window is over (at the next
//! [`flush`], which the node runs every [`FLUSH_EVERY`] and every command at its exit).
//! "Identical" is the same call site with the same field values: one dead upstream makes one
//! line per window, not one per call. (The summary cannot be written from inside the layer:
//! `tracing` drops an event dispatched while another is being dispatched on the same thread.)
//!
//! The decisions are the pure [`Table`] (time passed in), so they are tested without a clock.
//! Bounded: at most [`MAX_KINDS`] kinds are tracked; the oldest is dropped (its count summed
//! up) to make room.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How long identical warnings are counted instead of written.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// Most kinds of warning tracked at once (and most summaries waiting for a flush).
pub(crate) const MAX_KINDS: usize = 256;
/// How often the node writes the summaries that are due.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// A summary to write: how many copies of `text` were held back over how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) text: String,
    pub(crate) suppressed: u64,
    pub(crate) over: Duration,
}

#[derive(Debug)]
struct Kind {
    text: String,
    since: Instant,
    suppressed: u64,
}

/// The pure decision table.
#[derive(Debug, Default)]
pub(crate) struct Table {
    kinds: HashMap<u64, Kind>,
    order: VecDeque<u64>,
    /// Summaries due, waiting for [`flush`].
    pending: Vec<Summary>,
}

impl Table {
    /// An event of kind `key` (described by `text`) at `now`: whether to write it, and the
    /// summaries due (of this kind's finished window, or of kinds dropped for room).
    pub(crate) fn on_event(
        &mut self,
        key: u64,
        text: impl FnOnce() -> String,
        now: Instant,
    ) -> (bool, Vec<Summary>) {
        let mut due = self.expire(now);
        if let Some(k) = self.kinds.get_mut(&key) {
            k.suppressed += 1;
            return (false, due);
        }
        if self.kinds.len() >= MAX_KINDS
            && let Some(old) = self.order.pop_front()
            && let Some(k) = self.kinds.remove(&old)
            && k.suppressed > 0
        {
            due.push(summary(k, now));
        }
        self.kinds.insert(
            key,
            Kind {
                text: text(),
                since: now,
                suppressed: 0,
            },
        );
        self.order.push_back(key);
        (true, due)
    }

    /// Ends the windows that are over at `now`: their summaries (kinds without copies end
    /// silently).
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Summary> {
        let mut due = Vec::new();
        while let Some(&key) = self.order.front() {
            let over = self
                .kinds
                .get(&key)
                .is_none_or(|k| now.saturating_duration_since(k.since) >= WINDOW);
            if !over {
                break;
            }
            self.order.pop_front();
            if let Some(k) = self.kinds.remove(&key)
                && k.suppressed > 0
            {
                due.push(summary(k, now));
            }
        }
        due
    }
}

fn summary(k: Kind, now: Instant) -> Summary {
    Summary {
        text: k.text,
        suppressed: k.suppressed,
        over: now.saturating_duration_since(k.since),
    }
}

/// The table shared by the layer and [`flush`].
fn table() -> &'static Arc<Mutex<Table>> {
    static TABLE: OnceLock<Arc<Mutex<Table>>> = OnceLock::new();
    TABLE.get_or_init(Arc::default)
}

/// Writes the summaries of the windows that are over (the node calls it every few seconds,
/// so a count is not held back until the next warning).
pub(crate) fn flush() {
    let due = table()
        .lock()
        .map(|mut t| {
            let mut due = std::mem::take(&mut t.pending);
            due.extend(t.expire(Instant::now()));
            due
        })
        .unwrap_or_default();
    write(due);
}

/// Writes summaries as warnings of their own (outside any lock and any dispatch: the event
/// passes through the layer like any other).
fn write(due: Vec<Summary>) {
    for s in due {
        tracing::warn!(
            target: "themis::log",
            repeated = s.suppressed,
            "the previous warning was repeated {} more time{} in the last {} s: {}",
            s.suppressed,
            if s.suppressed == 1 { "" } else { "s" },
            s.over.as_secs().max(1),
            s.text
        );
    }
}

/// Collects an event's fields as `name=value` text.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

/// The layer: wraps the layer that writes.
pub(crate) struct Repeats<L> {
    inner: L,
}

impl<L> Repeats<L> {
    pub(crate) fn new(inner: L) -> Self {
        Self { inner }
    }
}

impl<S: Subscriber, L: Layer<S>> Layer<S> for Repeats<L> {
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        let summary = event.metadata().target() == "themis::log";
        if level > Level::WARN || summary {
            self.inner.on_event(event, ctx);
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        event.metadata().callsite().hash(&mut h);
        text.0.hash(&mut h);
        let pass = table().lock().map_or(true, |mut t| {
            let (pass, due) = t.on_event(h.finish(), || text.0.clone(), Instant::now());
            let room = MAX_KINDS.saturating_sub(t.pending.len());
            t.pending.extend(due.into_iter().take(room));
            pass
        });
        if pass {
            self.inner.on_event(event, ctx);
        }
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_record(span, values, ctx);
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn copies_within_the_window_are_counted_and_summed_up_once() {
        let t0 = Instant::now();
        let mut t = Table::default();
        assert_eq!(t.on_event(1, || "upstream down".into(), t0), (true, vec![]));
        for i in 1..=220u64 {
            let (pass, due) = t.on_event(1, String::new, t0 + Duration::from_millis(i * 10));
            assert!(!pass && due.is_empty());
        }
        // another kind is not held back by the first
        assert!(
            t.on_event(2, || "other".into(), t0 + Duration::from_secs(1))
                .0
        );
        // after the window: the summary, then the next copy is written again
        let (pass, due) = t.on_event(1, String::new, t0 + WINDOW + Duration::from_secs(1));
        assert!(pass);
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due[0].text, "upstream down");
        assert_eq!(due[0].suppressed, 220);
        // a kind without copies ends silently
        assert!(t.expire(t0 + WINDOW * 3).is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut t = Table::default();
        for k in 0..MAX_KINDS as u64 {
            t.on_event(k, || format!("k{k}"), t0);
            t.on_event(k, String::new, t0);
        }
        let (pass, due) = t.on_event(u64::MAX, || "new".into(), t0);
        assert!(pass);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].text, "k0");
        assert!(t.kinds.len() <= MAX_KINDS);
    }

    proptest! {
        #[test]
        fn every_event_is_written_or_counted_exactly_once(
            events in proptest::collection::vec((0u64..4, 0u64..3000), 1..200)
        ) {
            let t0 = Instant::now();
            let mut t = Table::default();
            let mut at = 0u64;
            let (mut written, mut counted) = (0u64, 0u64);
            for (key, step) in &events {
                at += step;
                let (pass, due) = t.on_event(*key, || format!("k{key}"), t0 + Duration::from_millis(at));
                written += u64::from(pass);
                counted += due.iter().map(|s| s.suppressed).sum::<u64>();
            }
            counted += t.expire(t0 + Duration::from_millis(at) + WINDOW).iter().map(|s| s.suppressed).sum::<u64>();
            prop_assert_eq!(written + counted, events.len() as u64);
        }
    }
}
