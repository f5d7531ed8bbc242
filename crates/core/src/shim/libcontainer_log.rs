//! libcontainer reports through `tracing`, the shim logs through `log`: this subscriber hands
//! libcontainer's errors to the shim log. They carry what libcontainer's own
//! errors drop, such as why the container process could not prepare its rootfs, which it
//! only logs from inside that process.
//!
//! Only errors: every other callsite is disabled for good at registration, so the many debug
//! events of container setup cost nothing (and its warnings, such as a cgroup controller the
//! host lacks, repeated at every container, stay out of the log).

use std::fmt::{Debug, Write as _};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{span, Event, Level, Metadata, Subscriber};

/// Installs the subscriber for this process (and the container processes cloned from it).
/// Does nothing if one is already installed.
pub(super) fn forward_to_log() {
    let _ = tracing::subscriber::set_global_default(ErrorsToLog);
}

struct ErrorsToLog;

impl Subscriber for ErrorsToLog {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() == Level::ERROR
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::ERROR)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = Fields(String::new());
        event.record(&mut text);
        log::error!("libcontainer:{}", text.0);
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// An event's fields as text: its message, then `name=value` for the others.
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let _ = if field.name() == "message" {
            write!(self.0, " {value:?}")
        } else {
            write!(self.0, " {}={value:?}", field.name())
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_forwarded_and_other_events_are_not() {
        tracing::subscriber::with_default(ErrorsToLog, || {
            assert!(tracing::enabled!(Level::ERROR));
            assert!(!tracing::enabled!(Level::WARN));
            assert!(!tracing::enabled!(Level::INFO));
            assert!(!tracing::enabled!(Level::DEBUG));
        });
    }
}
