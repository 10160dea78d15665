//! The Prometheus text exposition format (version 0.0.4): metric families, each with its
//! help and type, then its samples; label values and help texts escaped as the format
//! requires.

use std::fmt::{Display, Write as _};

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One exposition being written.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts the family `name`: its `# HELP` and `# TYPE` lines.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let _ = write!(self.out, "# HELP {name} ");
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.name());
        self
    }

    /// One sample: `name{label="value",...} value`.
    pub(crate) fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(text, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family of one unlabelled sample.
    pub(crate) fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help).sample(name, &[], value);
    }

    /// A family with one sample per value of the label `label`.
    pub(crate) fn by_label<V: Display>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (impl AsRef<str>, V)>,
    ) {
        self.family(name, kind, help);
        for (text, value) in samples {
            self.sample(name, &[(label, text.as_ref())], value);
        }
    }

    /// The text written.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Appends `text` as a label value: backslash, double quote and line feed escaped.
fn escape_label_value(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_follow_the_text_format() {
        let mut e = Exposition::default();
        e.single("a_total", Kind::Counter, "Things.", 3);
        e.by_label("b", Kind::Gauge, "By q.", "q", [("0", 1), ("1", 2)]);
        assert_eq!(
            e.finish(),
            "# HELP a_total Things.\n# TYPE a_total counter\na_total 3\n\
             # HELP b By q.\n# TYPE b gauge\nb{q=\"0\"} 1\nb{q=\"1\"} 2\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::default();
        e.by_label(
            "u_total",
            Kind::Counter,
            "Line one\nback\\slash",
            "user",
            [("a\"b\\c\nd", 7)],
        );
        assert_eq!(
            e.finish(),
            "# HELP u_total Line one\\nback\\\\slash\n# TYPE u_total counter\n\
             u_total{user=\"a\\\"b\\\\c\\nd\"} 7\n"
        );
    }
}
