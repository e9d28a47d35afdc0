//! The ids of one run: each id is the first line that has it; a later line with the same id is a
//! collision, not sent and not written (so that every id is at most one call and exactly one
//! result line).
//!
//! Ids are compared as strings, exactly: a line's `"id"` string as it is, an integer id as its
//! decimal digits (`7` and `"7"` are one id), a line without an id as its line number (`"3"` for
//! line 3, the same id as a line with `"id": "3"`). See [`crate::input::parse_line`].

use std::collections::HashMap;

/// The first line of every id seen so far in the run. Memory: one entry per distinct id (its
/// length plus about 50 bytes).
#[derive(Debug, Default)]
pub struct IdRegistry {
    first_line: HashMap<String, u64>,
}

/// A line whose id an earlier line already has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collision {
    /// The id.
    pub id: String,
    /// The line that has it first (and whose result is the id's result line).
    pub first_line: u64,
    /// The later line, not sent.
    pub line: u64,
}

impl std::fmt::Display for Collision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: id {:?} is already the id of line {}; not sent, no result line of its own (ids are compared as strings: 7 and \"7\" are one id, a line without an id has its line number)",
            self.line, self.id, self.first_line
        )
    }
}

impl IdRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Claims `id` for `line`: `Ok` if no earlier line has it, else the collision.
    ///
    /// ```
    /// use fabraix_sched::ids::IdRegistry;
    /// let mut ids = IdRegistry::new();
    /// assert!(ids.claim("7", 1).is_ok());
    /// let c = ids.claim("7", 4).unwrap_err();
    /// assert_eq!((c.first_line, c.line), (1, 4));
    /// ```
    pub fn claim(&mut self, id: &str, line: u64) -> Result<(), Collision> {
        match self.first_line.get(id) {
            Some(&first_line) => Err(Collision {
                id: id.to_string(),
                first_line,
                line,
            }),
            None => {
                self.first_line.insert(id.to_string(), line);
                Ok(())
            }
        }
    }
}
