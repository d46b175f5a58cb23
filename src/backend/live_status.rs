//! The compact form of what a backend reports about one tunnel ([`LiveStatus`]).
//!
//! Why it is not plain `Vec<String>`s and a `BTreeMap`: the event loop keeps one live status
//! per tunnel between passes (for OVSDB status, `tunnels/show`, metrics and diagnose), so its
//! heap is paid 10,000 times at 10,000 tunnels. Each line as its own `String`, each section
//! heading as another, a `Vec` per section and a `BTreeMap` node sized for eleven pairs as
//! soon as one key is set made it about a dozen allocations per tunnel and the largest single
//! holder of the daemon's heap at that scale. Here the established connections are one
//! buffer, the `tunnels/show` sections are one buffer and a small table of `&'static str`
//! headings (every backend names its sections with constants), and the keys a sorted
//! `Vec`: three or four allocations, each holding exactly its bytes once
//! [`LiveStatus::shrink_to_fit`] ran.
//!
//! Lines are kept each followed by `'\n'`. Every producer's lines are single lines (split from
//! a daemon's line-based output, or formatted from validated names, addresses and numbers);
//! a `'\n'` inside a pushed line would read back as two lines.

use std::fmt::{self, Write as _};

use super::LiveState;

/// Lines of text in one buffer, in the order they were pushed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Lines {
    /// Each line followed by `'\n'`.
    text: String,
}

impl Lines {
    pub fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }

    /// Pushes a formatted line (`format_args!`) without a temporary `String`.
    pub fn push_fmt(&mut self, line: fmt::Arguments<'_>) {
        // Writing into a `String` cannot fail.
        let _ = self.text.write_fmt(line);
        self.text.push('\n');
    }

    /// The lines, without their `'\n'`.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &str> + Clone + '_ {
        self.text.split_terminator('\n')
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Whether `line` is one of the lines.
    pub fn contains(&self, line: &str) -> bool {
        self.iter().any(|l| l == line)
    }

    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
    }
}

impl<S: AsRef<str>> FromIterator<S> for Lines {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut lines = Lines::default();
        lines.extend(iter);
        lines
    }
}

impl<S: AsRef<str>> Extend<S> for Lines {
    fn extend<I: IntoIterator<Item = S>>(&mut self, iter: I) {
        for line in iter {
            self.push(line.as_ref());
        }
    }
}

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// `tunnels/show` sections: a heading each and its lines, all lines in one buffer.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Details {
    lines: Lines,
    /// Each section's heading and the end of its lines in `lines.text`.
    sections: Vec<(&'static str, usize)>,
}

impl Details {
    /// Starts a new section (a heading may repeat; each section keeps its own lines).
    pub fn section(&mut self, heading: &'static str) {
        self.sections.push((heading, self.lines.text.len()));
    }

    /// Adds a line to the last section; starts an unnamed one ("") when there is none.
    pub fn push(&mut self, line: &str) {
        self.lines.push(line);
        self.close();
    }

    /// [`Details::push`] of a formatted line.
    pub fn push_fmt(&mut self, line: fmt::Arguments<'_>) {
        self.lines.push_fmt(line);
        self.close();
    }

    fn close(&mut self) {
        let end = self.lines.text.len();
        match self.sections.last_mut() {
            Some((_, e)) => *e = end,
            None => self.sections.push(("", end)),
        }
    }

    /// Whether the last section already has `line`.
    pub fn last_contains(&self, line: &str) -> bool {
        self.iter()
            .last()
            .is_some_and(|(_, mut lines)| lines.any(|l| l == line))
    }

    /// Each section's heading and lines, in order.
    pub fn iter(
        &self,
    ) -> impl Iterator<Item = (&'static str, impl Iterator<Item = &str> + Clone + '_)> + '_ {
        let mut start = 0;
        self.sections.iter().map(move |&(heading, end)| {
            let text = self.lines.text.get(start..end).unwrap_or_default();
            start = end;
            (heading, text.split_terminator('\n'))
        })
    }

    pub fn len(&self) -> usize {
        self.sections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sections.is_empty()
    }

    pub fn shrink_to_fit(&mut self) {
        self.lines.shrink_to_fit();
        self.sections.shrink_to_fit();
    }
}

impl fmt::Debug for Details {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(h, lines)| (h, lines.collect::<Vec<_>>())))
            .finish()
    }
}

/// What a backend reports about one tunnel, for OVSDB status and `tunnels/show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStatus {
    pub state: LiveState,
    /// Why the state is `Error` or `Down`; never a secret.
    error: Option<Box<str>>,
    /// Connections (or SA pairs) that are established, by name.
    active: Lines,
    /// Extra lines for `tunnels/show`, grouped under a heading each (e.g. "Kernel policies
    /// installed"), already redacted.
    details: Details,
    /// Backend-specific `external_ids` keys for the tunnel's row, sorted by key; only keys
    /// listed in `status::keys::BACKEND_INTERFACE` (and the OVSDB contract) are written.
    keys: Vec<(&'static str, Box<str>)>,
}

impl LiveStatus {
    pub fn new(state: LiveState) -> Self {
        Self {
            state,
            error: None,
            active: Lines::default(),
            details: Details::default(),
            keys: Vec::new(),
        }
    }

    /// A status in `state` because of `error`.
    pub fn failed(state: LiveState, error: impl Into<Box<str>>) -> Self {
        let mut st = Self::new(state);
        st.set_error(error);
        st
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn set_error(&mut self, error: impl Into<Box<str>>) {
        self.error = Some(error.into());
    }

    pub fn active(&self) -> &Lines {
        &self.active
    }

    pub fn active_mut(&mut self) -> &mut Lines {
        &mut self.active
    }

    pub fn push_active(&mut self, line: &str) {
        self.active.push(line);
    }

    pub fn details(&self) -> &Details {
        &self.details
    }

    pub fn details_mut(&mut self) -> &mut Details {
        &mut self.details
    }

    /// Adds a section `heading` with `lines`.
    pub fn add_details<S: AsRef<str>>(
        &mut self,
        heading: &'static str,
        lines: impl IntoIterator<Item = S>,
    ) {
        self.details.section(heading);
        for line in lines {
            self.details.push(line.as_ref());
        }
    }

    /// The value of backend key `key`, if set.
    pub fn key(&self, key: &str) -> Option<&str> {
        let i = self.keys.binary_search_by(|(k, _)| (*k).cmp(key)).ok()?;
        self.keys.get(i).map(|(_, v)| &**v)
    }

    /// Sets backend key `key` (replacing its value if set).
    pub fn set_key(&mut self, key: &'static str, value: impl Into<Box<str>>) {
        let value = value.into();
        match self.keys.binary_search_by(|(k, _)| (*k).cmp(key)) {
            Ok(i) => {
                if let Some(slot) = self.keys.get_mut(i) {
                    slot.1 = value;
                }
            }
            Err(i) => self.keys.insert(i, (key, value)),
        }
    }

    /// Gives back the spare capacity of every buffer: call once the status is complete,
    /// before it is kept.
    pub fn shrink_to_fit(&mut self) {
        self.active.shrink_to_fit();
        self.details.shrink_to_fit();
        self.keys.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_as_pushed() {
        let mut l = Lines::default();
        assert!(l.is_empty() && l.iter().next().is_none());
        l.push("a");
        l.push("");
        l.push_fmt(format_args!("{}-{}", "b", 1));
        assert_eq!(l.iter().collect::<Vec<_>>(), ["a", "", "b-1"]);
        assert_eq!(l.len(), 3);
        assert!(l.contains("") && l.contains("b-1") && !l.contains("b"));
        assert_eq!(format!("{l:?}"), r#"["a", "", "b-1"]"#);
        assert_eq!(["x", "y"].into_iter().collect::<Lines>().len(), 2);
    }

    #[test]
    fn details_keep_sections_apart() {
        let mut st = LiveStatus::new(LiveState::Up);
        st.add_details("A:", ["1", "2"]);
        st.add_details("Empty:", Vec::<String>::new());
        st.details_mut().section("B:");
        st.details_mut().push("");
        st.details_mut().push_fmt(format_args!("{}", 3));
        assert!(st.details().last_contains("3") && !st.details().last_contains("1"));
        let got: Vec<(&str, Vec<&str>)> = st
            .details()
            .iter()
            .map(|(h, lines)| (h, lines.collect()))
            .collect();
        assert_eq!(
            got,
            [
                ("A:", vec!["1", "2"]),
                ("Empty:", vec![]),
                ("B:", vec!["", "3"])
            ]
        );
        assert_eq!(st.details().len(), 3);
    }

    #[test]
    fn keys_sorted_and_replaced() {
        let mut st = LiveStatus::new(LiveState::Up);
        assert_eq!(st.key("b"), None);
        st.set_key("b", "1");
        st.set_key("a", String::from("2"));
        st.set_key("b", "3");
        assert_eq!(
            (st.key("a"), st.key("b"), st.key("c")),
            (Some("2"), Some("3"), None)
        );
        assert_eq!(st.keys, [("a", "2".into()), ("b", "3".into())]);
        let failed = LiveStatus::failed(LiveState::Down, "why");
        assert_eq!(
            (failed.state, failed.error()),
            (LiveState::Down, Some("why"))
        );
    }
}
