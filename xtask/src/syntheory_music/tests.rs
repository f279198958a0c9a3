//! Counts, class sets and `--limit` prefixes of the concepts.

use super::*;

#[test]
fn ninety_two_instruments() {
    let all = instruments();
    assert_eq!(all.len(), 92);
    assert!(!all.contains(&47) && !all.contains(&100) && !all.contains(&120));
    assert_eq!(pick_instruments(Some(1)), vec![0]);
    assert_eq!(pick_instruments(Some(4)).len(), 4);
}

#[test]
fn full_counts_match_the_reference() {
    let p = instruments();
    let count = |c: Concept| c.clips(&p, 0).len();
    assert_eq!(count(Concept::Notes), 9936);
    assert_eq!(count(Concept::Intervals), 39744);
    assert_eq!(count(Concept::Chords), 13248);
    assert_eq!(count(Concept::Scales), 15456);
    assert_eq!(count(Concept::Progressions), 20976);
    assert_eq!(Concept::Tempos.clips(&[], 0).len(), 4025);
    assert_eq!(Concept::TimeSignatures.clips(&[], 0).len(), 1200);
    for &c in <Concept as clap::ValueEnum>::value_variants() {
        let clips = c.clips(&p[..1], 0);
        let classes = c.classes().len();
        assert!(clips.iter().all(|s| s.class_index < classes), "{c:?}");
    }
}

#[test]
fn concept_names_round_trip_through_clap_and_serde() {
    use clap::ValueEnum;
    for &c in Concept::value_variants() {
        assert_eq!(Concept::from_str(c.name(), false), Ok(c));
        assert_eq!(serde_json::to_value(c).unwrap(), json!(c.name()));
    }
    assert!(Concept::from_str("time_signature", false).is_err());
}

#[test]
fn pitch_class_sets() {
    let want: [[u8; 3]; 4] = [[0, 4, 7], [0, 3, 7], [0, 4, 8], [0, 3, 6]];
    for c in &Concept::Chords.clips(&[0], 0) {
        let root = NOTE_NAMES
            .iter()
            .position(|n| c.attributes["root_note_name"] == *n)
            .unwrap() as u8;
        let mut pcs: Vec<u8> = c.notes.iter().map(|n| (n.key + 12 - root) % 12).collect();
        pcs.sort_unstable();
        pcs.dedup();
        assert_eq!(pcs, want[c.class_index].to_vec(), "{:?}", c.attributes);
    }
    for c in Concept::Intervals.clips(&[0], 0) {
        let keys: Vec<u8> = c.notes.iter().map(|n| n.key).collect();
        let span = keys.iter().max().unwrap() - keys.iter().min().unwrap();
        assert_eq!(usize::from(span), c.class_index + 1);
    }
}

#[test]
fn limit_prefix_is_balanced() {
    let notes = Concept::Notes.clips(&[0], 0);
    assert!(
        notes[..24]
            .iter()
            .enumerate()
            .all(|(i, c)| c.class_index == i % 12)
    );
    assert_eq!(notes[0].notes[0].key, 48);
}
