//! Exhaustive model check of a protocol's intermediate states.
//!
//! A thread on another core fetching a site while the protocol runs can see
//! any mix of the bytes written since the last sync. A write not marked atomic
//! may land byte by byte. A write marked atomic must be one naturally aligned
//! store; a fetch sees it whole only up to the granularity the architecture
//! guarantees for instruction fetch (single bytes on x86-64, aligned 32-bit
//! words on AArch64 and A32, aligned 16-bit half-words on Thumb-2), so a wider
//! one is split into granules.
//!
//! [`observable_states`] enumerates every state so observable; a backend's
//! tests then check that each decodes to the old instruction, a trap, or the
//! new instruction, and that the trap handler does the right thing in each.

use crate::backend::Plan;
use std::collections::BTreeSet;
use std::fmt;

/// A protocol the model rejects before enumerating anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// A write marked atomic cannot be one store on this architecture.
    MisalignedAtomic {
        /// Phase index.
        phase: usize,
        /// Offset of the write from the site.
        offset: usize,
        /// Its length.
        len: usize,
    },
    /// Two writes of one phase touch the same byte.
    Overlap {
        /// Phase index.
        phase: usize,
    },
    /// The plan does not end in the new instruction.
    WrongFinal {
        /// The bytes it ends in.
        got: Vec<u8>,
    },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::MisalignedAtomic { phase, offset, len } => write!(
                f,
                "phase {phase}: atomic write of {len} bytes at offset {offset} is not one aligned store"
            ),
            ModelError::Overlap { phase } => write!(f, "phase {phase}: writes overlap"),
            ModelError::WrongFinal { got } => {
                write!(f, "plan ends in [{}]", crate::backend::hex(got))
            }
        }
    }
}

/// One state a concurrent fetch can observe.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Observed {
    /// The phase being written when it is seen (`phases.len()` for the final state).
    pub phase: usize,
    /// The site's bytes.
    pub bytes: Vec<u8>,
}

/// Every state of the site at `addr` that a concurrent fetch can observe while
/// `plan` takes `old` to `new`, with a fetch granule of `granule` bytes.
pub fn observable_states(
    addr: usize,
    old: &[u8],
    new: &[u8],
    plan: &Plan,
    granule: usize,
) -> Result<Vec<Observed>, ModelError> {
    let mut state = old.to_vec();
    let mut out = BTreeSet::new();
    out.insert(Observed {
        phase: 0,
        bytes: state.clone(),
    });
    for (pi, phase) in plan.phases.iter().enumerate() {
        // Units: (offset, bytes) that land indivisibly.
        let mut units: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut touched = BTreeSet::new();
        for w in phase {
            let len = w.bytes.len();
            for i in 0..len {
                if !touched.insert(w.offset + i) {
                    return Err(ModelError::Overlap { phase: pi });
                }
            }
            let a = addr + w.offset;
            if w.atomic {
                if ![1, 2, 4, 8].contains(&len) || a % len != 0 {
                    return Err(ModelError::MisalignedAtomic {
                        phase: pi,
                        offset: w.offset,
                        len,
                    });
                }
                if len <= granule {
                    units.push((w.offset, w.bytes.clone()));
                    continue;
                }
            }
            // A non-atomic write may land byte by byte, in any order; an
            // atomic one wider than the fetch granule is fetched granule by
            // granule.
            let unit = if w.atomic { granule } else { 1 };
            let mut i = 0;
            while i < len {
                let start = a + i;
                let next = (start / unit + 1) * unit;
                let n = (next - start).min(len - i);
                units.push((w.offset + i, w.bytes[i..i + n].to_vec()));
                i += n;
            }
        }
        assert!(units.len() <= 20, "too many units to enumerate");
        for mask in 0u32..(1 << units.len()) {
            let mut s = state.clone();
            for (ui, (off, bytes)) in units.iter().enumerate() {
                if mask & (1 << ui) != 0 {
                    s[*off..*off + bytes.len()].copy_from_slice(bytes);
                }
            }
            out.insert(Observed {
                phase: pi,
                bytes: s,
            });
        }
        for (off, bytes) in &units {
            state[*off..*off + bytes.len()].copy_from_slice(bytes);
        }
    }
    if state != new {
        return Err(ModelError::WrongFinal { got: state });
    }
    out.insert(Observed {
        phase: plan.phases.len(),
        bytes: state,
    });
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Write;

    fn w(offset: usize, bytes: &[u8], atomic: bool) -> Write {
        Write {
            offset,
            bytes: bytes.to_vec(),
            atomic,
        }
    }

    #[test]
    fn one_non_atomic_write_tears_into_every_byte_mix() {
        let plan = Plan {
            phases: vec![vec![w(0, &[1, 2, 3], false)]],
        };
        let s = observable_states(0x1000, &[0, 0, 0], &[1, 2, 3], &plan, 1).unwrap();
        // 8 mixes during the phase (one of which is old, one new) + final (same bytes as a mix).
        let distinct: BTreeSet<_> = s.iter().map(|o| o.bytes.clone()).collect();
        assert_eq!(distinct.len(), 8);
    }

    #[test]
    fn aligned_atomic_word_does_not_tear_at_word_granule() {
        let plan = Plan {
            phases: vec![vec![w(0, &[1, 2, 3, 4], true)]],
        };
        let s = observable_states(0x1000, &[0; 4], &[1, 2, 3, 4], &plan, 4).unwrap();
        let distinct: BTreeSet<_> = s.iter().map(|o| o.bytes.clone()).collect();
        assert_eq!(distinct.len(), 2);
        // The same store, fetched half-word by half-word, tears.
        let s = observable_states(0x1000, &[0; 4], &[1, 2, 3, 4], &plan, 2).unwrap();
        let distinct: BTreeSet<_> = s.iter().map(|o| o.bytes.clone()).collect();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn misaligned_atomic_is_rejected() {
        let plan = Plan {
            phases: vec![vec![w(0, &[1, 2, 3, 4], true)]],
        };
        assert_eq!(
            observable_states(0x1002, &[0; 4], &[1, 2, 3, 4], &plan, 2),
            Err(ModelError::MisalignedAtomic {
                phase: 0,
                offset: 0,
                len: 4
            })
        );
    }

    #[test]
    fn plan_must_end_in_new() {
        let plan = Plan {
            phases: vec![vec![w(0, &[1], true)]],
        };
        assert!(matches!(
            observable_states(0, &[0, 0], &[1, 1], &plan, 1),
            Err(ModelError::WrongFinal { .. })
        ));
    }
}
