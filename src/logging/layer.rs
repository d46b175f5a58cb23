//! The `tracing` side: a layer that writes OVS lines, and a filter that lets the journald layer
//! see only what the `syslog` column allows.
//!
//! Both answer `Interest::sometimes()` for every callsite. `tracing` caches an `always`/`never`
//! answer per callsite forever, which would make a later `vlog/set ANY:dbg` ineffective for
//! debug callsites already seen; `sometimes` makes it ask [`LogHandle`] on every event instead,
//! which costs a few atomic loads.

use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};

use super::format::FieldText;
use super::handle::LogHandle;
use super::spec::{Destination, Level, module_of};

fn classify(meta: &Metadata<'_>) -> (usize, Level) {
    (module_of(meta.target()), Level::of_tracing(meta.level()))
}

/// Writes console and file lines; see the module documentation.
#[derive(Debug, Clone)]
pub struct VlogLayer {
    handle: LogHandle,
}

impl VlogLayer {
    pub(super) fn new(handle: LogHandle) -> Self {
        Self { handle }
    }
}

impl<S: Subscriber> Layer<S> for VlogLayer {
    fn register_callsite(&self, _meta: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _cx: Context<'_, S>) -> bool {
        let (module, level) = classify(meta);
        Destination::ALL
            .iter()
            .any(|d| self.handle.enabled(module, *d, level))
    }

    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let (module, level) = classify(event.metadata());
        let mut text = FieldText::default();
        event.record(&mut text);
        self.handle.emit(module, level, &text.text());
    }
}

/// Per-layer filter for the journald layer: the `syslog` column of the level table.
#[derive(Debug, Clone)]
pub struct SyslogFilter {
    handle: LogHandle,
}

impl SyslogFilter {
    pub(super) fn new(handle: LogHandle) -> Self {
        Self { handle }
    }
}

impl<S: Subscriber> Filter<S> for SyslogFilter {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        let (module, level) = classify(meta);
        self.handle.enabled(module, Destination::Syslog, level)
    }

    fn callsite_enabled(&self, _meta: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
}
