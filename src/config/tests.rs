//! Unit tests of `config`.

use clap::{Args, Command};

/// The README's configuration table must name every setting (and so keep up with this file).
#[test]
fn readme_documents_every_environment_variable() {
    let readme = include_str!("../../README.md");
    let command = super::Config::augment_args(Command::new("config"));
    let names: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    assert!(names.len() > 20, "found only {names:?}");
    for name in names {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README's configuration table lacks {name}"
        );
    }
}

fn parse(args: &[&str]) -> super::Config {
    use clap::Parser;
    #[derive(Parser)]
    struct Settings {
        #[command(flatten)]
        config: super::Config,
    }
    let mut argv = vec!["test"];
    argv.extend_from_slice(args);
    Settings::try_parse_from(argv).expect("parses").config
}

#[test]
fn python_jobs_get_the_child_limits_and_a_cpu_limit_just_past_the_deadline() {
    let config = parse(&[
        "--run-timeout-secs",
        "10",
        "--child-memory-mb",
        "512",
        "--child-max-processes",
        "64",
        "--child-file-size-mb",
        "4",
        "--child-open-files",
        "100",
    ]);
    let settings =
        config.containment_settings(std::path::Path::new("db"), std::path::Path::new("scratch"));
    let limits = settings.limits;
    assert_eq!(limits.memory_bytes, 512 * 1024 * 1024);
    assert_eq!(
        limits.cpu_secs,
        Some(12),
        "RUN_TIMEOUT_SECS + 2: a busy loop meets its deadline first"
    );
    assert_eq!(limits.max_processes, 64);
    assert_eq!(limits.file_size_bytes, 4 * 1024 * 1024);
    assert_eq!(limits.open_files, 100);
    let explicit = parse(&["--child-cpu-secs", "3"]);
    let settings =
        explicit.containment_settings(std::path::Path::new("db"), std::path::Path::new("scratch"));
    assert_eq!(settings.limits.cpu_secs, Some(3));
}

#[test]
fn python_jobs_alternate_between_two_uids_apart_from_the_engines() {
    let config = parse(&["--child-uid", "1001", "--child-alt-uid", "1002"]);
    let settings =
        config.containment_settings(std::path::Path::new("db"), std::path::Path::new("scratch"));
    assert_eq!(settings.python_identity.uid, 1001);
    assert_eq!(settings.python_alternate_identity.uid, 1002);
    assert_ne!(settings.engine_identity.uid, 1001);
    assert_ne!(settings.engine_identity.uid, 1002);
    assert_eq!(settings.python_identity.gid, config.child_gid);
}

#[test]
fn a_value_out_of_range_is_refused_naming_the_setting_and_its_range() {
    let err = parse(&["--run-timeout-secs", "1000000000000000000"])
        .validate()
        .expect_err("out of range");
    assert_eq!(
        err,
        "RUN_TIMEOUT_SECS=1000000000000000000 is out of range: it must be from 1 to 3600"
    );
    let err = parse(&["--child-memory-mb", "30"])
        .validate()
        .expect_err("too small");
    assert!(
        err.starts_with("CHILD_MEMORY_MB=30 is out of range: it must be from 128 to")
            && err.contains("64 MiB"),
        "{err}"
    );
    let err = parse(&["--instructor-token", " secret "])
        .validate()
        .expect_err("spaces");
    assert!(
        err.contains("INSTRUCTOR_TOKEN") && !err.contains("secret "),
        "{err}"
    );
}

#[test]
fn defaults_are_valid() {
    use clap::Parser;
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        config: super::Config,
    }
    let parsed = Defaults::try_parse_from(["test"]).expect("defaults parse");
    parsed.config.validate().expect("defaults are valid");
}
