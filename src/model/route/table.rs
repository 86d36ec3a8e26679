//! A compiled map: first match in file order, answered in constant time for
//! the shapes OpenShift writes (exact and one-label wildcard hosts) and by
//! regex for the rest. A general regex still wins when it comes first.

use std::collections::HashMap;

use regex::{Regex, RegexBuilder};

use super::shape::{classify, Shape};

/// Bound on a general regex's compiled size, so one hostile map line cannot
/// take the memory of the process.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A map line with its compiled value: what [`Table::build`] takes.
#[derive(Debug, Clone)]
pub struct Entry<V> {
    /// Line in the map file.
    pub line: usize,
    /// The pattern as written, for `route` output.
    pub pattern: String,
    pub value: V,
}

/// The entry a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a, V> {
    /// Line in the map file.
    pub line: usize,
    pub value: &'a V,
}

/// An invalid regex on a map line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub line: usize,
    pub message: String,
}

/// Host names (or wildcard suffixes) to the first entry for them, hashed
/// with a per-process random seed.
type Keys = HashMap<Box<str>, u32, foldhash::fast::RandomState>;

/// One map, compiled.
#[derive(Debug)]
pub struct Table<V> {
    /// All entries in file order; lookups return an index into this.
    entries: Vec<Stored<V>>,
    /// Every entry's pattern as written, one after the other (one
    /// allocation for the map instead of one per line).
    patterns: Box<str>,
    /// Exact host → first entry for it (`DOT`: that entry also matches the
    /// host with a trailing dot, which then needs no key of its own).
    exact: Keys,
    /// Wildcard suffix (`wild.test` for `*.wild.test`) → first entry, the
    /// same way.
    wildcard: Keys,
    /// General regexes with their entry index, in file order.
    general: Vec<(u32, Regex)>,
    /// Lines no host name can match (path routes), for `check`.
    never: Vec<usize>,
}

/// An entry as the table keeps it: 16 bytes beside its pattern's text.
#[derive(Debug)]
struct Stored<V> {
    line: u32,
    /// End of the pattern in `patterns` (it starts where the previous
    /// entry's ends).
    end: u32,
    value: V,
}

impl<V> Table<V> {
    /// Compiles entries (in file order). Bad regexes are reported and left
    /// out; the caller decides whether the table may still be used.
    pub fn build(entries: Vec<Entry<V>>) -> (Self, Vec<PatternError>) {
        Self::build_with(entries, classify)
    }

    /// The same for keys that are not host names (`alpn_be`'s
    /// `<protocol>,<name>`): every line is a regex, tried in file order.
    pub(crate) fn build_regexes(entries: Vec<Entry<V>>) -> (Self, Vec<PatternError>) {
        Self::build_with(entries, |_| Shape::General)
    }

    fn build_with(
        entries: Vec<Entry<V>>,
        classify: impl Fn(&str) -> Shape,
    ) -> (Self, Vec<PatternError>) {
        let mut table = Table {
            exact: Keys::default(),
            wildcard: Keys::default(),
            general: Vec::new(),
            never: Vec::new(),
            entries: Vec::with_capacity(entries.len()),
            patterns: Box::default(),
        };
        let mut patterns = String::with_capacity(entries.iter().map(|e| e.pattern.len()).sum());
        let mut errors = Vec::new();
        for entry in entries {
            let index = table.entries.len() as u32;
            let (Ok(line), Ok(end)) = (
                u32::try_from(entry.line),
                u32::try_from(patterns.len() + entry.pattern.len()),
            ) else {
                errors.push(PatternError {
                    line: entry.line,
                    message: "the map is too large: at most 4 GiB of patterns".into(),
                });
                continue;
            };
            match classify(&entry.pattern) {
                Shape::Exact(keys) => insert(&mut table.exact, keys, index),
                Shape::Wildcard(suffixes) => insert(&mut table.wildcard, suffixes, index),
                Shape::Never => table.never.push(entry.line),
                Shape::General => match compile(&entry.pattern) {
                    Ok(re) => table.general.push((index, re)),
                    Err(e) => {
                        errors.push(pattern_error(entry.line, e));
                        continue;
                    }
                },
            }
            patterns.push_str(&entry.pattern);
            table.entries.push(Stored {
                line,
                end,
                value: entry.value,
            });
        }
        table.patterns = patterns.into_boxed_str();
        table.exact.shrink_to_fit();
        table.wildcard.shrink_to_fit();
        (table, errors)
    }

    /// The first entry whose pattern matches `key` (a normalised host name).
    pub fn lookup(&self, key: &str) -> Option<Found<'_, V>> {
        let mut best = first(&self.exact, key);
        if let Some((_, suffix)) = key.split_once('.') {
            if let Some(i) = first(&self.wildcard, suffix) {
                best = Some(best.map_or(i, |b| b.min(i)));
            }
        }
        let limit = best.unwrap_or(u32::MAX);
        let earlier = self.general.iter().take_while(|(i, _)| *i < limit);
        let hit = earlier
            .filter(|(_, re)| re.is_match(key))
            .map(|(i, _)| *i)
            .next();
        let stored = &self.entries[hit.or(best)? as usize];
        Some(Found {
            line: stored.line as usize,
            value: &stored.value,
        })
    }

    /// Entries compiled.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries' values, in file order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|e| &e.value)
    }

    /// The pattern written on `line`, for explanations.
    pub fn pattern_at(&self, line: usize) -> Option<&str> {
        let line = u32::try_from(line).ok()?;
        let i = self.entries.binary_search_by_key(&line, |e| e.line).ok()?;
        Some(self.pattern(i))
    }

    fn pattern(&self, i: usize) -> &str {
        let start = i.checked_sub(1).map_or(0, |p| self.entries[p].end as usize);
        self.patterns
            .get(start..self.entries[i].end as usize)
            .unwrap_or_default()
    }

    /// The entries as they were given (for a table of another kind built
    /// from the same lines).
    pub fn to_entries(&self) -> Vec<Entry<V>>
    where
        V: Clone,
    {
        (0..self.entries.len())
            .map(|i| Entry {
                line: self.entries[i].line as usize,
                pattern: self.pattern(i).to_string(),
                value: self.entries[i].value.clone(),
            })
            .collect()
    }

    /// Lines that no host name can match, in file order.
    pub fn never_lines(&self) -> &[usize] {
        &self.never
    }

    /// How many entries need a regex scan (not answered by hashing).
    pub fn general_count(&self) -> usize {
        self.general.len()
    }
}

/// Marks an index whose entry also matches its key with a trailing dot.
const DOT: u32 = 1 << 31;

/// Keys of one entry at `index`, the first entry for a key winning. A key
/// followed by the same key with a trailing dot (`\\.?` in the pattern, as
/// OpenShift writes) takes one slot for both when the entry is the first
/// for both.
fn insert(map: &mut Keys, keys: Vec<String>, index: u32) {
    use std::collections::hash_map::Entry as Slot;
    let mut keys = keys.into_iter().peekable();
    while let Some(key) = keys.next() {
        let dotted_next = keys
            .peek()
            .is_some_and(|next| next.strip_suffix('.') == Some(key.as_str()));
        // A dotted key alone: covered if the bare name's slot matches with
        // the dot already (its entry came first).
        if let Some(bare) = key.strip_suffix('.') {
            if map.get(bare).is_some_and(|&v| v & DOT != 0) {
                continue;
            }
        }
        match map.entry(key.into_boxed_str()) {
            Slot::Vacant(slot) => {
                slot.insert(if dotted_next { index | DOT } else { index });
                if dotted_next {
                    keys.next();
                }
            }
            // Taken by an earlier entry: if it matches with the dot too,
            // the dotted key is covered; else the dotted key is inserted on
            // its own (next turn).
            Slot::Occupied(slot) => {
                if dotted_next && *slot.get() & DOT != 0 {
                    keys.next();
                }
            }
        }
    }
}

/// The first entry for `key`: its own slot, or the slot of the key without
/// its trailing dot when that entry also matches with the dot.
fn first(map: &Keys, key: &str) -> Option<u32> {
    let own = map.get(key).map(|&v| v & !DOT);
    let undotted = key
        .strip_suffix('.')
        .and_then(|bare| map.get(bare))
        .filter(|&&v| v & DOT != 0)
        .map(|&v| v & !DOT);
    match (own, undotted) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(super) fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

pub(super) fn pattern_error(line: usize, e: impl std::fmt::Display) -> PatternError {
    let text = e.to_string();
    // regex errors span several lines (pattern, caret, reason): keep the reason.
    let reason = text.lines().last().unwrap_or("invalid regex").trim();
    PatternError {
        line,
        message: format!("invalid regex: {}", reason.trim_start_matches("error: ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(patterns: &[&str]) -> Table<usize> {
        let entries = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| Entry {
                line: i + 1,
                pattern: p.to_string(),
                value: i,
            })
            .collect();
        let (table, errors) = Table::build(entries);
        assert!(errors.is_empty(), "{errors:?}");
        table
    }

    fn hit(t: &Table<usize>, key: &str) -> Option<usize> {
        t.lookup(key).map(|e| *e.value)
    }

    #[test]
    fn first_match_wins_across_shapes() {
        let t = table(&[
            r"^[^\.]*\.apps\.test\.?(:[0-9]+)?(/.*)?$",
            r"^www\.apps\.test\.?(:[0-9]+)?(/.*)?$",
            r"^api\.test$",
            r"^.*\.internal\.test$",
            r"^x\.internal\.test$",
        ]);
        assert_eq!(hit(&t, "www.apps.test"), Some(0)); // wildcard came first
        assert_eq!(hit(&t, "api.test"), Some(2));
        assert_eq!(hit(&t, "x.internal.test"), Some(3)); // general came first
        assert_eq!(hit(&t, "a.b.apps.test"), None); // one label only
        assert_eq!(hit(&t, "nothing.test"), None);
        assert_eq!(t.general_count(), 1);
    }

    /// A name and the name with a trailing dot share a slot only while
    /// one entry is first for both; otherwise each keeps its own first.
    #[test]
    fn trailing_dots_keep_first_match() {
        let t = table(&[
            r"^a\.test$",
            r"^a\.test\.?(:[0-9]+)?(/.*)?$",
            r"^b\.test\.?(:[0-9]+)?(/.*)?$",
            r"^b\.test\.$",
            r"^[^\.]*\.w\.test\.?(:[0-9]+)?(/.*)?$",
        ]);
        assert_eq!(hit(&t, "a.test"), Some(0));
        assert_eq!(hit(&t, "a.test."), Some(1), "line 1 takes no dot");
        assert_eq!(hit(&t, "b.test"), Some(2));
        assert_eq!(hit(&t, "b.test."), Some(2), "line 3 came first");
        assert_eq!(hit(&t, "x.w.test."), Some(4));
        assert_eq!(hit(&t, "c.test."), None);
        // One key each for b.test and w.test: the dotted forms share them.
        assert_eq!(t.exact.len(), 3, "a.test, a.test. and b.test");
        assert_eq!(t.wildcard.len(), 1);
    }

    /// A path-looking tail that admits the empty string still matches
    /// the bare host, so that line wins over a later one.
    #[test]
    fn optional_slash_still_matches_the_host_first() {
        for first in [r"^a\.test/?$", r"^a\.test/{0,1}$", r"^a\.test/*$"] {
            let t = table(&[first, r"^a\.test$", r"^a\.test/x$"]);
            assert_eq!(hit(&t, "a.test"), Some(0), "{first}");
            assert_eq!(t.never_lines(), &[3]);
        }
    }

    #[test]
    fn bad_regex_reports_its_line() {
        let entries = vec![
            Entry {
                line: 3,
                pattern: "^ok$".into(),
                value: 0,
            },
            Entry {
                line: 7,
                pattern: "^(unclosed$".into(),
                value: 1,
            },
        ];
        let (t, errors) = Table::build(entries);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 7);
        assert!(
            errors[0].message.contains("unclosed"),
            "{}",
            errors[0].message
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.pattern_at(3), Some("^ok$"));
        assert_eq!(t.pattern_at(7), None);
    }

    /// Patterns drawn from the shapes OpenShift writes and a few general
    /// regexes, over a small alphabet of hosts so that they collide often.
    fn pattern() -> impl Strategy<Value = String> {
        let label = prop::sample::select(vec!["a", "b", "www", "api"]);
        let domain = prop::sample::select(vec!["x.test", "y.test", "test"]);
        (0..7u8, label, domain).prop_map(|(kind, l, d)| {
            let q = |s: &str| s.replace('.', r"\.");
            match kind {
                0 => format!(r"^{}\.{}\.?(:[0-9]+)?(/.*)?$", q(l), q(d)),
                1 => format!(r"^{}\.{}$", q(l), q(d)),
                2 => format!(r"^[^\.]*\.{}\.?(:[0-9]+)?(/.*)?$", q(d)),
                3 => format!(r"^{}\.{}\.?(:[0-9]+)?/p(/.*)?$", q(l), q(d)),
                4 => format!(r"{}\.{}", q(l), q(d)), // unanchored
                5 => format!(r"^({}|b)\..*$", l),
                _ => format!(r"^.*{}$", q(d)),
            }
        })
    }

    fn key() -> impl Strategy<Value = String> {
        let label = prop::sample::select(vec!["a", "b", "www", "api", "zz", "a.b"]);
        // Keys with a trailing dot too: `\.?` admits them, and they share
        // a slot with the bare name.
        let domain = prop::sample::select(vec!["x.test", "y.test", "test", "other", "x.test."]);
        (label, domain).prop_map(|(l, d)| format!("{l}.{d}"))
    }

    /// Host regexes (exact, wildcard, general) with tails that look like
    /// paths, some of which still admit a bare host name.
    fn tailed_pattern() -> impl Strategy<Value = String> {
        let host = prop::sample::select(vec![
            r"^a\.x\.test",
            r"^b\.x\.test",
            r"^[^\.]*\.x\.test",
            r"^[^.]*\.test",
            r"^(a|b)\.x\.test",
            r"^a\.x\.t{1}est",
            r"^.*\.test",
            r"^a\.(x|y)\.test",
        ]);
        let tail = prop::sample::select(vec![
            r"\.?(:[0-9]+)?(/.*)?$",
            r"\.?(:[0-9]+)?/api(/.*)?$",
            r"/?$",
            r"/*$",
            r"/+$",
            r"/{0,1}$",
            r"/{1,2}$",
            r"(/.*)?$",
            r"/api(/.*)?$",
            r"(/|/api)?$",
            r"(/api|\.y)?$",
            r"(/.*|)$",
            r"\.?$",
            r"\.$",
            r"$",
            r"/$|\.test$",
            r"(:[0-9]+)?",
        ]);
        (host, tail).prop_map(|(h, t)| format!("{h}{t}"))
    }

    fn tailed_key() -> impl Strategy<Value = String> {
        let label = prop::sample::select(vec!["a", "b", "", "a.b", "zz"]);
        let domain = prop::sample::select(vec!["x.test", "y.test", "test", "x.test."]);
        (label, domain).prop_map(|(l, d)| {
            if l.is_empty() {
                format!(".{d}")
            } else {
                format!("{l}.{d}")
            }
        })
    }

    proptest! {
        /// Whatever a map line holds, building and looking up never panic.
        #[test]
        fn arbitrary_patterns_never_panic(patterns in prop::collection::vec(".{0,40}", 0..20), key in "[a-z0-9.-]{0,30}") {
            let entries = patterns
                .into_iter()
                .enumerate()
                .map(|(i, pattern)| Entry { line: i + 1, pattern, value: i })
                .collect();
            let (t, _) = Table::build(entries);
            let _ = t.lookup(&key);
        }

        /// Whatever tail follows the host, the table answers as the regexes
        /// do in file order (HAProxy's first match).
        #[test]
        fn path_looking_tails_answer_as_ordered_scan(
            patterns in prop::collection::vec(tailed_pattern(), 1..12),
            keys in prop::collection::vec(tailed_key(), 1..12),
        ) {
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let t = table(&refs);
            let naive: Vec<Regex> = patterns.iter().map(|p| Regex::new(p).unwrap()).collect();
            for k in &keys {
                let expected = naive.iter().position(|re| re.is_match(k));
                prop_assert_eq!(hit(&t, k), expected, "key {} patterns {:?}", k, patterns);
            }
        }

        /// The fast table answers exactly as an ordered scan of the regexes.
        #[test]
        fn same_answer_as_ordered_scan(
            patterns in prop::collection::vec(pattern(), 0..30),
            keys in prop::collection::vec(key(), 1..20),
        ) {
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let t = table(&refs);
            let naive: Vec<Regex> = patterns.iter().map(|p| Regex::new(p).unwrap()).collect();
            for k in &keys {
                let expected = naive.iter().position(|re| re.is_match(k));
                prop_assert_eq!(hit(&t, k), expected, "key {}", k);
            }
        }
    }
}
