use super::*;
use directions::ConceptKind;

fn file(n_blocks: usize, d: usize) -> DirectionsFile {
    let unit = |i: usize| {
        let mut v = vec![0.0f32; d];
        v[i % d] = 1.0;
        v
    };
    DirectionsFile {
        concept: "test".into(),
        classes: vec!["a".into(), "b".into()],
        kind: ConceptKind::Binary,
        metric: "auc".into(),
        model: "test".into(),
        d_model: d,
        n_layers_model: n_blocks,
        pooling: "mean".into(),
        site: "block_output".into(),
        layers: (0..n_blocks as i64).collect(),
        directions: vec![
            (0..n_blocks).map(unit).collect(),
            (0..n_blocks).map(|b| unit(b + 1)).collect(),
        ],
        scores: vec![
            (0..n_blocks).map(|b| b as f32).collect(),
            vec![0.5; n_blocks],
        ],
    }
}

fn plan_with_gate(gate: f32, seed: u64) -> SteeringPlan {
    let device = Device::default();
    let mut plan = SteeringPlan::new(4, 8, seed, &device);
    plan.add(
        &file(4, 8),
        Path::new("t.safetensors"),
        0,
        1.0,
        Schedule::Constant,
        &LayerWeights::All,
        gate,
    )
    .unwrap();
    plan
}

#[test]
fn same_seed_same_gates() {
    let a = plan_with_gate(0.3, 42);
    let b = plan_with_gate(0.3, 42);
    let c = plan_with_gate(0.3, 43);
    let draws = |p: &SteeringPlan| {
        (0..4)
            .flat_map(|blk| (0..500).map(move |t| (blk, t)))
            .map(|(blk, t)| p.gate_open(0, blk, t))
            .collect::<Vec<_>>()
    };
    assert_eq!(draws(&a), draws(&b));
    assert_ne!(draws(&a), draws(&c));
}

#[test]
fn gate_rate_is_p_within_three_sigma() {
    for p in [0.05f32, 0.3, 0.7] {
        let plan = plan_with_gate(p, 7);
        let n = 4 * 5000;
        let open = (0..4)
            .flat_map(|b| (0..5000).map(move |t| (b, t)))
            .filter(|&(b, t)| plan.gate_open(0, b, t))
            .count();
        let rate = open as f64 / n as f64;
        let sigma = (p as f64 * (1.0 - p as f64) / n as f64).sqrt();
        assert!(
            (rate - p as f64).abs() < 3.0 * sigma,
            "p = {p}: rate {rate}, σ {sigma}"
        );
    }
    let always = plan_with_gate(1.0, 7);
    assert!((0..1000).all(|t| always.gate_open(0, 2, t)));
    let never = plan_with_gate(0.0, 7);
    assert!((0..1000).all(|t| !never.gate_open(0, 2, t)));
}

#[test]
fn schedule_advances_on_steps_where_the_gate_is_closed() {
    let device = Device::default();
    let mut plan = SteeringPlan::new(4, 8, 3, &device);
    plan.add(
        &file(4, 8),
        Path::new("t"),
        0,
        1.0,
        Schedule::LinearRise { t0: 0, t1: 100 },
        &LayerWeights::All,
        0.3,
    )
    .unwrap();
    // Find a step where block 0's gate is closed, then one where it is open after it.
    let closed = (0..100).find(|&t| !plan.gate_open(0, 0, t)).unwrap();
    let open = (closed + 1..100)
        .find(|&t| plan.gate_open(0, 0, t))
        .unwrap();
    assert!(
        plan.delta(0, closed).is_none(),
        "nothing added where the gate is closed"
    );
    let added = plan
        .delta(0, open)
        .unwrap()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    // c(t) is the global-step value: t/100 at step `open`, not (number of open steps)/100.
    assert!(
        (added[0] - open as f32 / 100.0).abs() < 1e-6,
        "{} at step {open}",
        added[0]
    );
    // What the generation does: one hook per step, every step, gate open or not. Block 0's
    // output at step `closed` passes unchanged, and at step `open` it gets the coefficient of
    // the global step, although the gate was closed at some step before it.
    let gates: Vec<bool> = (0..=open).map(|t| plan.gate_open(0, 0, t)).collect();
    let mut added_at = |step: usize| {
        let hidden = Tensor::<3>::zeros([1, 1, 8], &device);
        let out = plan.hook(step).after_block(0, hidden);
        out.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    };
    for (step, &gate_open) in gates.iter().enumerate() {
        let out = added_at(step);
        let expected = if gate_open { step as f32 / 100.0 } else { 0.0 };
        assert!(
            (out[0] - expected).abs() < 1e-6 && out[1..].iter().all(|&x| x == 0.0),
            "step {step}: block 0 got {out:?}, expected {expected} at coordinate 0"
        );
    }
    assert_eq!(added_at(closed), vec![0.0; 8], "closed gate: nothing added");
    assert!((added_at(open)[0] - open as f32 / 100.0).abs() < 1e-6);
}

#[test]
fn weights_and_multiple_steers_add_up() {
    let device = Device::default();
    let mut plan = SteeringPlan::new(4, 8, 0, &device);
    let f = file(4, 8);
    plan.add(
        &f,
        Path::new("t"),
        0,
        2.0,
        Schedule::Constant,
        &LayerWeights::Linear { beta: 1.0 },
        1.0,
    )
    .unwrap();
    plan.add(
        &f,
        Path::new("t"),
        1,
        -1.0,
        Schedule::Constant,
        &LayerWeights::All,
        1.0,
    )
    .unwrap();
    // block 0: linear weight of the worst layer is 0, so only steer 1 adds −1 at coordinate 1.
    let d0 = plan
        .delta(0, 5)
        .unwrap()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    assert_eq!(d0, vec![0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    // block 3: steer 0 adds 2·1 at coordinate 3, steer 1 adds −1 at coordinate 4.
    let d3 = plan
        .delta(3, 5)
        .unwrap()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    assert_eq!(d3, vec![0.0, 0.0, 0.0, 2.0, -1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn mismatched_files_are_rejected_with_their_reason() {
    let device = Device::default();
    let mut plan = SteeringPlan::new(4, 16, 0, &device);
    let err = plan
        .add(
            &file(4, 8),
            Path::new("notes.safetensors"),
            0,
            1.0,
            Schedule::Constant,
            &LayerWeights::All,
            1.0,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("d_model 8") && err.to_string().contains("notes.safetensors"),
        "{err}"
    );
    let mut plan = SteeringPlan::new(2, 8, 0, &device);
    let err = plan
        .add(
            &file(4, 8),
            Path::new("f"),
            0,
            1.0,
            Schedule::Constant,
            &LayerWeights::All,
            1.0,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("block 2") && err.to_string().contains("2 blocks"),
        "{err}"
    );
    let err = plan
        .add(
            &file(2, 8),
            Path::new("f"),
            0,
            1.0,
            Schedule::Constant,
            &LayerWeights::All,
            1.5,
        )
        .unwrap_err();
    assert!(err.to_string().contains("--gate 1.5"), "{err}");
    let err = resolve_class(&file(2, 8), "c", Path::new("f")).unwrap_err();
    assert!(
        err.to_string().contains("class `c`") && err.to_string().contains("a, b"),
        "{err}"
    );
    assert_eq!(resolve_class(&file(2, 8), "b", Path::new("f")).unwrap(), 1);
    assert_eq!(resolve_class(&file(2, 8), "0", Path::new("f")).unwrap(), 0);
}

#[test]
fn steer_args_parse() {
    let a = SteerArg::parse("dirs/notes.safetensors:C#=0.45@exp:0.998").unwrap();
    assert_eq!(a.file, PathBuf::from("dirs/notes.safetensors"));
    assert_eq!(a.class, "C#");
    assert_eq!(a.strength, 0.45);
    assert_eq!(a.schedule, Schedule::ExpDecay { rate: 0.998 });
    let b = SteerArg::parse("C:/x/tempo.safetensors:0=-0.3").unwrap();
    assert_eq!(
        (b.file, b.class, b.strength, b.schedule),
        (
            PathBuf::from("C:/x/tempo.safetensors"),
            "0".into(),
            -0.3,
            Schedule::Constant
        )
    );
    for bad in [
        "notes.safetensors=0.3",
        "notes.safetensors:C=",
        "notes.safetensors:C=abc",
        "f:C=0.3@wobble",
        ":C=1",
    ] {
        assert!(SteerArg::parse(bad).is_err(), "{bad}");
    }
}
