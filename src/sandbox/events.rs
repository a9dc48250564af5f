//! The PostHog twin's events table: compact rows laid out as PostHog lays
//! out its own (by date, then event name), so a query reads only the dates
//! and events it names. Event names, property sets and people are interned:
//! a simulated site sends hundreds of thousands of events a test, most of
//! them autocaptured clicks and page leaves that no funnel counts.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use chrono::{DateTime, Utc};

/// One captured event, as the twin's callers give it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub person_id: String,
    pub event: String,
    pub timestamp: DateTime<Utc>,
    pub properties: BTreeMap<String, String>,
}

/// Milliseconds in a UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// One stored event: when, who, and which property set (its name is the
/// partition it is stored in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Unix time in milliseconds.
    pub ms: i64,
    pub person: u32,
    pub props: u32,
}

/// Values numbered in the order they were first seen.
#[derive(Debug)]
struct Interner<T> {
    values: Vec<T>,
    ids: HashMap<T, u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            values: Vec::new(),
            ids: HashMap::new(),
        }
    }
}

impl<T: Clone + Eq + Hash> Interner<T> {
    fn id(&mut self, value: &T) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = u32::try_from(self.values.len()).expect("fewer than 2^32 distinct values");
        self.values.push(value.clone());
        self.ids.insert(value.clone(), id);
        id
    }

    fn find(&self, value: &T) -> Option<u32> {
        self.ids.get(value).copied()
    }

    fn get(&self, id: u32) -> &T {
        &self.values[id as usize]
    }

    fn len(&self) -> usize {
        self.values.len()
    }
}

/// The events, partitioned by (UTC day, event name).
#[derive(Debug, Default)]
pub struct EventLog {
    names: Interner<String>,
    props: Interner<BTreeMap<String, String>>,
    people: Interner<String>,
    parts: BTreeMap<(i64, u32), Vec<Row>>,
    len: usize,
}

impl EventLog {
    /// The id of an event name, added if new.
    pub fn event_id(&mut self, name: &str) -> u32 {
        self.names.id(&name.to_string())
    }

    /// The id of an event name, if any event had it.
    pub fn find_event(&self, name: &str) -> Option<u32> {
        self.names.find(&name.to_string())
    }

    /// How many distinct event names there are (ids are `0..names_len()`).
    pub fn names_len(&self) -> u32 {
        self.names.len() as u32
    }

    pub fn event_name(&self, id: u32) -> &str {
        self.names.get(id)
    }

    /// The id of a property set, added if new.
    pub fn props_id(&mut self, props: &BTreeMap<String, String>) -> u32 {
        self.props.id(props)
    }

    pub fn props(&self, id: u32) -> &BTreeMap<String, String> {
        self.props.get(id)
    }

    /// Distinct property sets seen so far.
    pub fn props_count(&self) -> usize {
        self.props.len()
    }

    /// The id of a person, added if new.
    pub fn person_id(&mut self, name: &str) -> u32 {
        self.people.id(&name.to_string())
    }

    pub fn person_name(&self, id: u32) -> &str {
        self.people.get(id)
    }

    pub fn people(&self) -> usize {
        self.people.len()
    }

    pub fn push(&mut self, event: u32, row: Row) {
        self.parts
            .entry((row.ms.div_euclid(DAY_MS), event))
            .or_default()
            .push(row);
        self.len += 1;
    }

    pub fn push_event(&mut self, e: &Event) {
        let event = self.event_id(&e.event);
        let row = Row {
            ms: e.timestamp.timestamp_millis(),
            person: self.person_id(&e.person_id),
            props: self.props_id(&e.properties),
        };
        self.push(event, row);
    }

    /// Every event stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows of the events named `events` with `from_ms <= ms <= until_ms`:
    /// only the partitions of those dates and names are read.
    pub fn scan<'a>(
        &'a self,
        events: &'a [u32],
        from_ms: i64,
        until_ms: i64,
    ) -> impl Iterator<Item = (u32, Row)> + 'a {
        let first = from_ms.div_euclid(DAY_MS);
        let last = until_ms.div_euclid(DAY_MS);
        (first..=last)
            .flat_map(move |day| events.iter().map(move |&e| (day, e)))
            .filter_map(move |key| self.parts.get(&key).map(|rows| (key.1, rows)))
            .flat_map(|(e, rows)| rows.iter().map(move |r| (e, *r)))
            .filter(move |(_, r)| r.ms >= from_ms && r.ms <= until_ms)
    }

    /// Every row with its event id, partition by partition.
    pub fn all(&self) -> impl Iterator<Item = (u32, Row)> + '_ {
        self.parts
            .iter()
            .flat_map(|((_, e), rows)| rows.iter().map(move |r| (*e, *r)))
    }

    /// Rows back into events (for exports and tests).
    pub fn event(&self, event: u32, row: Row) -> Event {
        Event {
            person_id: self.person_name(row.person).to_string(),
            event: self.event_name(event).to_string(),
            timestamp: DateTime::from_timestamp_millis(row.ms).unwrap_or_default(),
            properties: self.props(row.props).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(person: &str, event: &str, at: &str, path: &str) -> Event {
        Event {
            person_id: person.into(),
            event: event.into(),
            timestamp: at.parse().expect("time"),
            properties: BTreeMap::from([("$pathname".to_string(), path.to_string())]),
        }
    }

    #[test]
    fn a_scan_reads_only_the_named_events_and_dates() {
        let mut log = EventLog::default();
        for e in [
            ev("a", "$pageview", "2026-03-02T10:00:00Z", "/"),
            ev("a", "$pageleave", "2026-03-02T10:01:00Z", "/"),
            ev("b", "$pageview", "2026-03-03T23:59:59Z", "/pricing"),
            ev("b", "$pageview", "2026-03-05T00:00:00Z", "/"),
        ] {
            log.push_event(&e);
        }
        assert_eq!(log.len(), 4);
        assert_eq!(log.people(), 2);
        let pageview = log.find_event("$pageview").expect("seen");
        let from = "2026-03-02T10:00:00Z"
            .parse::<DateTime<Utc>>()
            .expect("time")
            .timestamp_millis();
        let until = "2026-03-04T00:00:00Z"
            .parse::<DateTime<Utc>>()
            .expect("time")
            .timestamp_millis();
        let got: Vec<Event> = log
            .scan(&[pageview], from, until)
            .map(|(e, r)| log.event(e, r))
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].person_id, "a");
        assert_eq!(got[1].properties["$pathname"], "/pricing");
        assert_eq!(log.find_event("signup"), None);
        assert_eq!(log.all().count(), 4);
    }
}
