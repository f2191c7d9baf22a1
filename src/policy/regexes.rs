//! Every `path_regex` of a route table in one `RegexSet` per pass, so a request is run through
//! them once instead of once per route: with hundreds of regex routes, one `is_match` each cost
//! more than everything else in a check.

use regex::{Regex, RegexSet, RegexSetBuilder, SetMatches};

/// The sets, indexed by each regex route's slot. `None` when the routes' regexes together
/// exceed the regex crate's size limits: matching then falls back to one regex per route.
#[derive(Debug, Clone, Default)]
pub struct RegexIndex {
    sets: Option<Sets>,
}

#[derive(Debug, Clone)]
struct Sets {
    exact: RegexSet,
    folded: RegexSet,
}

impl RegexIndex {
    /// `patterns` are the routes' anchored patterns, in slot order.
    pub fn build(patterns: &[&str]) -> Self {
        if patterns.is_empty() {
            return Self::default();
        }
        let build = |case_insensitive: bool| {
            RegexSetBuilder::new(patterns)
                .case_insensitive(case_insensitive)
                .build()
        };
        let sets = match (build(false), build(true)) {
            (Ok(exact), Ok(folded)) => Some(Sets { exact, folded }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "path_regex routes are matched one by one");
                None
            }
        };
        Self { sets }
    }

    /// Lazy answers for `path` with exact letter case.
    pub fn exact<'a>(&'a self, path: &'a str) -> RegexHits<'a> {
        RegexHits::new(self.sets.as_ref().map(|s| &s.exact), path)
    }

    /// Lazy answers for the folded `path`, ASCII case ignored.
    pub fn folded<'a>(&'a self, path: &'a str) -> RegexHits<'a> {
        RegexHits::new(self.sets.as_ref().map(|s| &s.folded), path)
    }
}

/// Which regex routes match one path: computed at the first regex route a scan reaches, so a
/// request decided by an earlier prefix route pays nothing.
pub struct RegexHits<'a> {
    set: Option<&'a RegexSet>,
    path: &'a str,
    hits: Option<SetMatches>,
}

impl<'a> RegexHits<'a> {
    fn new(set: Option<&'a RegexSet>, path: &'a str) -> Self {
        Self {
            set,
            path,
            hits: None,
        }
    }

    pub fn path(&self) -> &'a str {
        self.path
    }

    /// Whether the route in `slot`, whose own regex is `regex`, matches.
    pub fn matched(&mut self, slot: usize, regex: &Regex) -> bool {
        let Some(set) = self.set else {
            return regex.is_match(self.path);
        };
        let path = self.path;
        self.hits
            .get_or_insert_with(|| set.matches(path))
            .matched(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_answers_as_each_regex_would() {
        let patterns = ["^(?:/a/[0-9]+)$", "^(?:/A/x)$", "^(?:/(a|b)/.*)$"];
        let regexes: Vec<Regex> = patterns.iter().map(|p| Regex::new(p).unwrap()).collect();
        let folded: Vec<Regex> = patterns
            .iter()
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .case_insensitive(true)
                    .build()
                    .unwrap()
            })
            .collect();
        let index = RegexIndex::build(&patterns);
        let fallback = RegexIndex::default();
        for path in ["/a/12", "/a/x", "/A/x", "/b/anything", "/c/1", "/A/12", ""] {
            for slot in 0..patterns.len() {
                let expected = regexes[slot].is_match(path);
                assert_eq!(index.exact(path).matched(slot, &regexes[slot]), expected);
                assert_eq!(fallback.exact(path).matched(slot, &regexes[slot]), expected);
                let expected = folded[slot].is_match(path);
                assert_eq!(index.folded(path).matched(slot, &folded[slot]), expected);
                assert_eq!(fallback.folded(path).matched(slot, &folded[slot]), expected);
            }
        }
    }
}
