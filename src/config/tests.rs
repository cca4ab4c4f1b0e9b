use super::*;
use crate::error::exit_code;

fn load(preset: &str, sets: &[&str]) -> Result<Config> {
    Config::load(&Sources { preset: preset.into(), file: None, sets: sets.iter().map(|s| s.to_string()).collect() })
}

fn usage_error(sets: &[&str]) -> String {
    let err = load("quick", sets).unwrap_err();
    assert_eq!(exit_code(&err), 2, "{err:#}");
    let message = format!("{err:#}");
    assert!(!message.contains('\n'), "one line: {message}");
    message
}

#[test]
fn presets_parse_and_validate() {
    let paper = load("paper", &[]).unwrap();
    assert_eq!(paper.train.members, 50);
    assert_eq!(paper.data.length, 256);
    let quick = load("quick", &[]).unwrap();
    assert!(quick.train.members < paper.train.members);
    assert_ne!(paper.hash(), quick.hash());
}

#[test]
fn sets_override_with_types_checked() {
    let c = load("quick", &["train.epochs=7", "train.lr=0.01", "explain.split=train", "data.period=[10, 20]"]).unwrap();
    assert_eq!(c.train.epochs, 7);
    assert_eq!(c.train.lr, 0.01);
    assert_eq!(c.explain.split, "train");
    assert_eq!(c.data.period, [10.0, 20.0]);
    // A TOML array may span lines.
    assert_eq!(load("quick", &["data.period=[10,\n 20]"]).unwrap().data.period, [10.0, 20.0]);
    assert_ne!(c.hash(), load("quick", &[]).unwrap().hash());
}

#[test]
fn each_mistake_names_its_key() {
    let cases: &[(&[&str], &str)] = &[
        (&["train.epoch=3"], "unknown key train.epoch"),
        (&["nosuch.key=1"], "unknown key nosuch"),
        (&["train.epochs=three"], "train.epochs"),
        (&["seed=1\nbogus=5"], "seed: the value sets other keys"),
        (&["train.members=7\n[data]\nsignals=5"], "train.members: the value sets other keys"),
        (&["train.epochs=0"], "train.epochs = 0"),
        (&["train.lr=-1"], "train.lr"),
        (&["train.lr=nan"], "train.lr"),
        (&["train.lr=inf"], "train.lr"),
        (&["model.dropout=1.0"], "model.dropout"),
        (&["model.score_offset=nan"], "model.score_offset"),
        (&["train.beta1=1"], "train.beta1"),
        (&["data.length=100"], "multiple of 16"),
        (&["data.train=10"], "data.train + data.test"),
        (&["data.amplitude=[2, 1]"], "data.amplitude"),
        (&["data.amplitude=[0, 0]"], "nothing to explain"),
        (&["data.max_perturbations=0"], "data.max_perturbations = 0"),
        (&["data.noise=-0.1"], "data.noise"),
        (&["model.channels=[4, 8]"], "model.channels"),
        (&["model.kernel=4"], "model.kernel"),
        (&["explain.methods=[\"lime\"]"], "lime"),
        (&["explain.methods=[\"grad\", \"grad\"]"], "twice"),
        (&["seed=-1"], "--set seed:"),
        (&["data.width=[1, 2, 3]"], "--set data.width:"),
        (&["explain.split=val"], "explain.split"),
        (&["train.batch_size=4096"], "train.batch_size"),
        (&["train.members=99999999"], "train.members"),
        (&["evaluate.examples=[5000]"], "evaluate.examples"),
        (&["model.channels=[4096, 4096, 4096, 4096]"], "parameters per member"),
        (&["data.length=65536", "model.channels=[64, 64, 64, 64]"], "activations per signal"),
        (&["train"], "expected key=value"),
        (&["=3"], "empty key"),
        (&["train=3"], "must be a table"),
    ];
    for (sets, expected) in cases {
        let message = usage_error(sets);
        assert!(message.contains(expected), "{sets:?}: {message}");
    }
}

#[test]
fn config_files_layer_between_preset_and_sets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[train]\nepochs = 9\nmembers = 3\n").unwrap();
    let sources = Sources { preset: "quick".into(), file: Some(path.clone()), sets: vec!["train.members=2".into()] };
    let c = Config::load(&sources).unwrap();
    assert_eq!((c.train.epochs, c.train.members), (9, 2));

    std::fs::write(&path, "[train\nepochs = ").unwrap();
    let err = Config::load(&Sources { sets: vec![], ..sources.clone() }).unwrap_err();
    assert_eq!(exit_code(&err), 2);
    assert!(err.to_string().contains("c.toml"), "{err}");
    std::fs::write(&path, "[train]\nepochs = 9\n[data]\nsignals = -5\n").unwrap();
    let err = Config::load(&Sources { sets: vec![], ..sources.clone() }).unwrap_err();
    assert_eq!(exit_code(&err), 2);
    assert!(err.to_string().contains("c.toml: data.signals: invalid value"), "{err}");
    // Two bad keys: the one serde's message is about is named, whatever the keys' order.
    std::fs::write(&path, "[explain]\nmax_iter = -2\n[train]\nepochs = -1\n").unwrap();
    let err = Config::load(&Sources { sets: vec![], ..sources.clone() }).unwrap_err().to_string();
    let named = if err.contains("-1") { "train.epochs" } else { "explain.max_iter" };
    assert!(err.contains(&format!("c.toml: {named}: invalid value")), "{err}");
    let missing = Sources { file: Some(dir.path().join("none.toml")), ..sources };
    assert_eq!(exit_code(&Config::load(&missing).unwrap_err()), 2);
}

#[test]
fn unknown_preset_is_a_usage_error() {
    assert_eq!(exit_code(&load("huge", &[]).unwrap_err()), 2);
}

#[test]
fn member_seeds_are_distinct_and_stable() {
    let c = load("quick", &[]).unwrap();
    let seeds: std::collections::HashSet<u64> = (0..1000).map(|m| c.member_seed(m)).collect();
    assert_eq!(seeds.len(), 1000);
    assert_eq!(c.member_seed(3), load("quick", &["train.epochs=9"]).unwrap().member_seed(3));
}

/// Rules added later refuse new configurations only: a run directory whose config.toml
/// predates them (sanity_members = 1 meant "no check", repeated examples a figure twice) still
/// opens, `status` included.
#[test]
fn later_rules_refuse_new_configs_but_not_saved_ones() {
    for set in ["evaluate.sanity_members=1", "evaluate.examples=[1, 1]", "train.eps=1e-40"] {
        let message = usage_error(&[set]);
        assert!(message.contains(set.split('=').next().unwrap()), "{message}");
        let mut saved = toml::Value::try_from(load("quick", &[]).unwrap()).unwrap();
        let (key, value) = set.split_once('=').unwrap();
        let (section, name) = key.split_once('.').unwrap();
        saved[section][name] = toml::from_str::<toml::Value>(&format!("v = {value}")).unwrap()["v"].clone();
        Config::from_value(saved).unwrap();
    }
}
