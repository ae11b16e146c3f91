//! A single-level hashed timing wheel with rounds (Varghese & Lauck,
//! scheme 5), every slot and entry allocated at start-up.
//!
//! ```text
//! slots: SLOT_COUNT lists, one per tick of TICK_MS; a list holds entries by
//! index (entries are linked through `next`, so insert never allocates).
//! insert(delay): tick = now_tick + ceil(delay / TICK_MS); push on slot
//!                tick % SLOT_COUNT                                  O(1)
//! expire(now):   for each tick passed: walk its slot, take entries whose
//!                tick has come, keep the others (later rounds)      O(1)
//!                amortised per entry and round
//! ```
//!
//! Why single-level: retry delays run from tens of milliseconds to
//! `max_delay_ms` (30 s by default). With 1024 slots of 10 ms the wheel turns
//! in 10.24 s, so an entry is looked at about `delay / 10.24 s + 1` times,
//! at most four times with the defaults; a hierarchy would save little and
//! cost cascading. An `occupied` bitmap (one bit per slot) finds the next
//! due slot without walking empty ones, for the dispatcher's park timeout:
//! `trailing_zeros` on each 64-slot word, at most 17 words per search.
//!
//! Trap: all expired entries are taken out before any is processed, because
//! processing may insert into the same slot.

use std::time::{Duration, Instant};

/// Slots; a power of two so that `tick % SLOT_COUNT` is a mask.
pub const SLOT_COUNT: usize = 1024;
/// Resolution of the wheel.
pub const TICK_MS: u64 = 10;
const NIL: u32 = u32::MAX;

const _: () = assert!(SLOT_COUNT.is_power_of_two());
const _: () = assert!(SLOT_COUNT.is_multiple_of(64));

/// Insert into a full wheel; hands the item back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelFull(pub RetryItem);

/// What waits: a batch's in-flight slot and a sink index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryItem {
    pub batch_slot: u32,
    pub sink: u16,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    item: RetryItem,
    /// Absolute tick at which the entry is due.
    due_tick: u64,
    /// Next entry in the same slot list, or in the free list.
    next: u32,
}

/// The wheel. Invariant: every entry index is in exactly one slot list or
/// in the free list; `len` counts the ones in slot lists.
#[derive(Debug)]
pub struct RetryWheel {
    heads: Box<[u32]>,
    entries: Box<[Entry]>,
    free_head: u32,
    len: usize,
    occupied: Box<[u64]>,
    origin: Instant,
    /// Every tick before this one has been expired.
    tick_next: u64,
}

impl RetryWheel {
    /// A wheel for at most `capacity` waiting items.
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity > 0 && capacity < NIL as usize,
            "capacity={capacity}"
        );
        let entries = (0..capacity)
            .map(|index| Entry {
                item: RetryItem {
                    batch_slot: 0,
                    sink: 0,
                },
                due_tick: 0,
                next: if index + 1 < capacity {
                    (index + 1) as u32
                } else {
                    NIL
                },
            })
            .collect();
        Self {
            heads: vec![NIL; SLOT_COUNT].into_boxed_slice(),
            entries,
            free_head: 0,
            len: 0,
            occupied: vec![0; SLOT_COUNT / 64].into_boxed_slice(),
            origin: Instant::now(),
            tick_next: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    fn tick_at(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_millis() as u64) / TICK_MS
    }

    /// Schedules `item` to be due `delay` after `now` (rounded up to a tick,
    /// and never in a tick already expired).
    pub fn insert(
        &mut self,
        item: RetryItem,
        delay: Duration,
        now: Instant,
    ) -> Result<(), WheelFull> {
        if self.free_head == NIL {
            return Err(WheelFull(item));
        }
        let delay_ticks = (delay.as_millis() as u64).div_ceil(TICK_MS);
        let due_tick = (self.tick_at(now) + delay_ticks).max(self.tick_next);
        let index = self.free_head;
        let slot = (due_tick as usize) & (SLOT_COUNT - 1);
        let entry = &mut self.entries[index as usize];
        self.free_head = entry.next;
        *entry = Entry {
            item,
            due_tick,
            next: self.heads[slot],
        };
        self.heads[slot] = index;
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.len += 1;
        debug_assert!(
            self.len <= self.entries.len(),
            "len={} capacity={}",
            self.len,
            self.entries.len()
        );
        Ok(())
    }

    /// Moves every item due at `now` into `due` (in no particular order).
    pub fn expire(&mut self, now: Instant, due: &mut Vec<RetryItem>) {
        let tick_now = self.tick_at(now);
        if self.len == 0 {
            self.tick_next = tick_now + 1;
            return;
        }
        // A full turn visits every slot; more ticks than that add nothing.
        let first = self
            .tick_next
            .max((tick_now + 1).saturating_sub(SLOT_COUNT as u64));
        for tick in first..=tick_now {
            self.expire_slot(tick, tick_now, due);
        }
        self.tick_next = tick_now + 1;
    }

    fn expire_slot(&mut self, tick: u64, tick_now: u64, due: &mut Vec<RetryItem>) {
        let slot = (tick as usize) & (SLOT_COUNT - 1);
        let mut index = self.heads[slot];
        let mut kept = NIL;
        while index != NIL {
            let entry = self.entries[index as usize];
            if entry.due_tick <= tick_now {
                due.push(entry.item);
                self.entries[index as usize].next = self.free_head;
                self.free_head = index;
                self.len -= 1;
            } else {
                self.entries[index as usize].next = kept;
                kept = index;
            }
            index = entry.next;
        }
        self.heads[slot] = kept;
        if kept == NIL {
            self.occupied[slot / 64] &= !(1 << (slot % 64));
        }
    }

    /// Time until the next occupied slot's tick, if any item waits. An
    /// item of a later round may make this early; that costs one empty
    /// wake-up, never a late retry.
    pub fn next_due_in(&self, now: Instant) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let tick_now = self.tick_at(now);
        let start = self.tick_next.max(tick_now);
        let offset = self
            .next_occupied_offset((start as usize) & (SLOT_COUNT - 1))
            .unwrap_or(SLOT_COUNT);
        let due = self.origin + Duration::from_millis((start + offset as u64) * TICK_MS);
        Some(due.saturating_duration_since(now))
    }

    /// Slots from `first` (itself included) to the next occupied slot,
    /// going round the wheel once: a word of the bitmap at a time. The
    /// word holding `first` is looked at twice: its bits from `first` on
    /// first, and, after the wrap-around, whole (its bits from `first` on
    /// are known to be clear by then).
    fn next_occupied_offset(&self, first: usize) -> Option<usize> {
        let words = self.occupied.len();
        let (word_first, bit_first) = (first / 64, first % 64);
        (0..=words).find_map(|step| {
            let word = (word_first + step) % words;
            let mut bits = self.occupied[word];
            if step == 0 {
                bits &= u64::MAX << bit_first;
            }
            let slot = word * 64 + std::num::NonZeroU64::new(bits)?.trailing_zeros() as usize;
            Some((slot + SLOT_COUNT - first) % SLOT_COUNT)
        })
    }

    /// Takes every waiting item out, due or not (shutdown).
    pub fn drain(&mut self, all: &mut Vec<RetryItem>) {
        for slot in 0..SLOT_COUNT {
            let mut index = self.heads[slot];
            while index != NIL {
                let entry = self.entries[index as usize];
                all.push(entry.item);
                self.entries[index as usize].next = self.free_head;
                self.free_head = index;
                self.len -= 1;
                index = entry.next;
            }
            self.heads[slot] = NIL;
        }
        self.occupied.iter_mut().for_each(|word| *word = 0);
        debug_assert_eq!(self.len, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(number: u32) -> RetryItem {
        RetryItem {
            batch_slot: number,
            sink: 0,
        }
    }

    /// Every delay at every slot boundary, ±1 tick, across rounds: an item
    /// is never due early and is due at its tick.
    #[test]
    fn items_expire_exactly_at_their_tick_across_boundaries() {
        let boundaries = [
            0,
            1,
            2,
            SLOT_COUNT - 1,
            SLOT_COUNT,
            SLOT_COUNT + 1,
            2 * SLOT_COUNT - 1,
            2 * SLOT_COUNT,
            3 * SLOT_COUNT + 7,
        ];
        for &delay_ticks in &boundaries {
            let mut wheel = RetryWheel::new(4);
            let origin = wheel.origin;
            let at = |tick: u64| origin + Duration::from_millis(tick * TICK_MS);
            wheel
                .insert(
                    item(1),
                    Duration::from_millis(delay_ticks as u64 * TICK_MS),
                    at(0),
                )
                .expect("room");
            let mut due = Vec::new();
            if delay_ticks > 0 {
                wheel.expire(at(delay_ticks as u64 - 1), &mut due);
                assert!(due.is_empty(), "early at delay {delay_ticks}");
            }
            wheel.expire(at(delay_ticks as u64), &mut due);
            assert_eq!(due, vec![item(1)], "due at delay {delay_ticks}");
            assert!(wheel.is_empty());
        }
    }

    #[test]
    fn full_wheel_hands_the_item_back_and_frees_on_expiry() {
        let mut wheel = RetryWheel::new(2);
        let now = wheel.origin;
        wheel
            .insert(item(1), Duration::from_millis(50), now)
            .expect("room");
        wheel
            .insert(item(2), Duration::from_millis(50), now)
            .expect("room");
        assert_eq!(
            wheel.insert(item(3), Duration::ZERO, now),
            Err(WheelFull(item(3)))
        );
        let mut due = Vec::new();
        wheel.expire(now + Duration::from_millis(60), &mut due);
        due.sort_by_key(|item| item.batch_slot);
        assert_eq!(due, vec![item(1), item(2)]);
        wheel
            .insert(item(3), Duration::ZERO, now + Duration::from_millis(60))
            .expect("room again");
        assert_eq!(wheel.len(), 1);
    }

    #[test]
    fn next_due_and_drain() {
        let mut wheel = RetryWheel::new(8);
        let now = wheel.origin;
        assert_eq!(wheel.next_due_in(now), None);
        wheel
            .insert(item(1), Duration::from_millis(200), now)
            .expect("room");
        wheel
            .insert(item(2), Duration::from_secs(60), now)
            .expect("room");
        let next = wheel.next_due_in(now).expect("waiting");
        assert!(next <= Duration::from_millis(200), "{next:?}");
        let mut all = Vec::new();
        wheel.drain(&mut all);
        assert_eq!(all.len(), 2);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_due_in(now), None);
    }

    /// A wheel whose expiry has reached `tick` (its next tick), empty.
    fn wheel_at(tick: u64) -> (RetryWheel, impl Fn(u64) -> Instant) {
        let mut wheel = RetryWheel::new(8);
        let origin = wheel.origin;
        let at = move |tick: u64| origin + Duration::from_millis(tick * TICK_MS);
        wheel.expire(at(tick - 1), &mut Vec::new());
        assert_eq!(wheel.tick_next, tick);
        (wheel, at)
    }

    fn ticks(count: u64) -> Duration {
        Duration::from_millis(count * TICK_MS)
    }

    /// The current slot is near the end of the wheel and the item is due
    /// in its last slot, just before the wrap; a later item after the wrap
    /// does not hide it.
    #[test]
    fn next_due_finds_the_last_slot_before_the_wrap() {
        let start = 3 * SLOT_COUNT as u64 + SLOT_COUNT as u64 - 5;
        let (mut wheel, at) = wheel_at(start);
        wheel.insert(item(2), ticks(20), at(start)).expect("room");
        assert_eq!(wheel.next_due_in(at(start)), Some(ticks(20)));
        wheel.insert(item(1), ticks(4), at(start)).expect("room");
        assert_eq!((start + 4) as usize % SLOT_COUNT, SLOT_COUNT - 1);
        assert_eq!(wheel.next_due_in(at(start)), Some(ticks(4)));
        let mut due = Vec::new();
        wheel.expire(at(start + 4), &mut due);
        assert_eq!(due, vec![item(1)]);
        assert_eq!(wheel.next_due_in(at(start + 4)), Some(ticks(16)));
    }

    /// The item is due almost a full turn later, in a slot of the current
    /// slot's bitmap word that lies before the current slot: only the
    /// wrap-around finds it.
    #[test]
    fn next_due_finds_a_slot_far_after_the_wrap() {
        let start = SLOT_COUNT as u64 + 1000;
        let (mut wheel, at) = wheel_at(start);
        wheel.insert(item(1), ticks(1000), at(start)).expect("room");
        let slot = (start + 1000) as usize % SLOT_COUNT;
        assert!(slot < 1000 % SLOT_COUNT && slot / 64 == 1000 / 64);
        assert_eq!(wheel.next_due_in(at(start)), Some(ticks(1000)));
        // Half a tick later, still that slot, less the time gone.
        let later = at(start) + Duration::from_millis(TICK_MS / 2);
        assert_eq!(
            wheel.next_due_in(later),
            Some(ticks(1000) - Duration::from_millis(TICK_MS / 2))
        );
        // An item after the current slot in the same word comes first.
        wheel.insert(item(2), ticks(10), at(start)).expect("room");
        assert_eq!(wheel.next_due_in(at(start)), Some(ticks(10)));
    }

    /// The first due tick a slot-by-slot scan of the bitmap finds.
    fn next_due_tick_by_scan(wheel: &RetryWheel, start: u64) -> u64 {
        (start..start + SLOT_COUNT as u64)
            .find(|&tick| {
                let slot = (tick as usize) & (SLOT_COUNT - 1);
                wheel.occupied[slot / 64] & (1 << (slot % 64)) != 0
            })
            .expect("an occupied slot")
    }

    /// Against a slot-by-slot scan: one to four items at random distances
    /// (later rounds included, which are reported at their slot's next
    /// turn: early, never late) from current slots at and around word
    /// boundaries and the wrap.
    #[test]
    fn next_due_matches_a_slot_by_slot_scan() {
        let starts = [1, 63, 64, 65, 127, 500, 959, 960, 1000, 1023, 1024, 1025];
        let mut seed = 11u64;
        let mut random = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for start in starts {
            for round in 0..200 {
                let (mut wheel, at) = wheel_at(start);
                for number in 0..=random(4) {
                    let delay = random(3 * SLOT_COUNT as u64);
                    wheel
                        .insert(item(number as u32), ticks(delay), at(start))
                        .expect("room");
                }
                let expected = next_due_tick_by_scan(&wheel, start) - start;
                assert_eq!(
                    wheel.next_due_in(at(start)),
                    Some(ticks(expected)),
                    "start {start}, round {round}"
                );
            }
        }
    }

    /// A model check: random inserts and expiries against a sorted list.
    #[test]
    fn matches_a_simple_model() {
        let mut wheel = RetryWheel::new(64);
        let origin = wheel.origin;
        let mut model: Vec<(u64, u32)> = Vec::new();
        let mut seed = 7u64;
        let mut next_id = 0;
        for step in 0..5000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let now_tick = step * 3;
            let now = origin + Duration::from_millis(now_tick * TICK_MS);
            if !seed.is_multiple_of(3) && model.len() < 64 {
                let delay_ticks = seed % 3000;
                wheel
                    .insert(
                        item(next_id),
                        Duration::from_millis(delay_ticks * TICK_MS),
                        now,
                    )
                    .expect("room");
                model.push((now_tick + delay_ticks, next_id));
                next_id += 1;
            }
            let mut due = Vec::new();
            wheel.expire(now, &mut due);
            let mut due_ids: Vec<u32> = due.iter().map(|item| item.batch_slot).collect();
            due_ids.sort();
            let mut expected: Vec<u32> = model
                .iter()
                .filter(|(tick, _)| *tick <= now_tick)
                .map(|(_, id)| *id)
                .collect();
            expected.sort();
            model.retain(|(tick, _)| *tick > now_tick);
            assert_eq!(due_ids, expected, "step {step}");
            assert_eq!(wheel.len(), model.len());
        }
    }
}
