//! Resolving model ids to local files: the Hugging Face cache layout offline (built in a tempdir from the tiny
//! fixtures), environment precedence, typed errors, and the online path against a local mock of the hub's HTTP API
//! (no network is needed or used).

#![cfg(feature = "hub")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use altclip::hub::{
    cache_dir_from_env, is_commit_hash, is_true, repo_folder_name, resolve, resolve_with_env, HubEnv, HubOptions,
    ModelFiles, ModelSource,
};
use altclip::{AltClipModel, CheckpointFiles, Error};
use candle_core::{DType, Device, Tensor};

const REPO: &str = "test-org/tiny-altclip";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const OTHER_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(name)
}

/// Lays `files` of fixture `layout` out as `huggingface_hub` does: blobs, a snapshot of links to them, a ref.
fn make_cache(cache: &Path, layout: &str, commit: &str, revision_ref: Option<&str>) -> PathBuf {
    let repo = cache.join(repo_folder_name(REPO));
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    for entry in std::fs::read_dir(fixture(layout)).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let blob = repo.join("blobs").join(format!("{commit}-{}", name.to_string_lossy()));
        std::fs::copy(entry.path(), &blob).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&blob, snapshot.join(&name)).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, snapshot.join(&name)).unwrap();
    }
    if let Some(rev) = revision_ref {
        let ref_file = repo.join("refs").join(rev);
        std::fs::create_dir_all(ref_file.parent().unwrap()).unwrap();
        std::fs::write(ref_file, commit).unwrap();
    }
    snapshot
}

fn offline_env(cache: &Path) -> HubEnv {
    HubEnv {
        hf_hub_cache: Some(cache.to_string_lossy().into_owned()),
        hf_hub_offline: Some("1".into()),
        ..HubEnv::default()
    }
}

fn text_features(model: &AltClipModel) -> Vec<f32> {
    let ids = Tensor::new(&[[0u32, 6, 5, 17, 2], [0, 7, 99, 2, 1]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 1, 1, 0]], &Device::Cpu).unwrap();
    model
        .get_text_features(&ids, Some(&mask))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn assert_same_model(files: &ModelFiles, layout: &str) {
    let resolved = AltClipModel::from_dir(files.dir(), DType::F32, &Device::Cpu).unwrap();
    let direct = AltClipModel::from_dir(fixture(layout), DType::F32, &Device::Cpu).unwrap();
    let (a, b) = (text_features(&resolved), text_features(&direct));
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 1e-6, "{layout}: feature {i}: {x} vs {y}");
    }
    let via_helper = files.load_model(DType::F32, &Device::Cpu).unwrap();
    assert_eq!(text_features(&via_helper), a);
}

#[test]
fn offline_single_safetensors_matches_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = make_cache(tmp.path(), "st", COMMIT, Some("main"));
    std::fs::write(snapshot.join("tokenizer.json"), "{}").unwrap();
    let files = resolve_with_env(REPO, &HubOptions::default(), &offline_env(tmp.path())).unwrap();
    assert_eq!(files.dir(), snapshot);
    assert_eq!(files.commit(), Some(COMMIT));
    assert_eq!(files.repo_id(), REPO);
    assert_eq!(files.config(), snapshot.join("config.json"));
    assert_eq!(
        files.weights(),
        &CheckpointFiles::Safetensors(vec![snapshot.join("model.safetensors")])
    );
    assert_eq!(files.tokenizer(), Some(snapshot.join("tokenizer.json").as_path()));
    assert_eq!(files.preprocessor_config(), None);
    assert_eq!(files.sentencepiece_model(), None);
    match files.source() {
        ModelSource::Cache {
            revision,
            commit,
            cache_dir,
        } => {
            assert_eq!(revision, "main");
            assert_eq!(commit, COMMIT);
            assert_eq!(cache_dir, tmp.path());
        }
        other => panic!("unexpected source {other:?}"),
    }
    assert_same_model(&files, "st");
}

#[test]
fn offline_option_with_explicit_cache_dir() {
    // No environment at all: the options alone select the cache and offline mode.
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = make_cache(tmp.path(), "st", COMMIT, Some("main"));
    let opts = HubOptions::new().with_cache_dir(tmp.path()).with_offline(true);
    let files = resolve_with_env(REPO, &opts, &HubEnv::default()).unwrap();
    assert_eq!(files.dir(), snapshot);
    // `resolve` reads the process environment only for what the options leave unset.
    let files = resolve(REPO, &opts).unwrap();
    assert_eq!(files.dir(), snapshot);
}

#[test]
fn offline_empty_cache_is_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = resolve_with_env(REPO, &HubOptions::default(), &offline_env(tmp.path())).unwrap_err();
    match &err {
        Error::OfflineMissing {
            repo,
            revision,
            file,
            cache_dir,
        } => {
            assert_eq!(repo, REPO);
            assert_eq!(revision, "main");
            assert_eq!(file, "config.json");
            assert_eq!(cache_dir, tmp.path());
        }
        other => panic!("expected OfflineMissing, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("huggingface-cli download test-org/tiny-altclip"), "{msg}");
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
}

#[test]
fn offline_missing_weights_and_shards_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = make_cache(tmp.path(), "sharded", COMMIT, Some("main"));
    std::fs::remove_file(snapshot.join("model-00002-of-00003.safetensors")).unwrap();
    let env = offline_env(tmp.path());
    match resolve_with_env(REPO, &HubOptions::default(), &env).unwrap_err() {
        Error::OfflineMissing { file, .. } => assert_eq!(file, "model-00002-of-00003.safetensors"),
        other => panic!("expected OfflineMissing, got {other:?}"),
    }
    for f in std::fs::read_dir(&snapshot).unwrap() {
        let path = f.unwrap().path();
        if path.file_name().unwrap() != "config.json" {
            std::fs::remove_file(path).unwrap();
        }
    }
    match resolve_with_env(REPO, &HubOptions::default(), &env).unwrap_err() {
        Error::OfflineMissing { file, .. } => assert!(file.contains("pytorch_model.bin"), "{file}"),
        other => panic!("expected OfflineMissing, got {other:?}"),
    }
}

#[test]
fn offline_sharded_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = make_cache(tmp.path(), "sharded", COMMIT, Some("main"));
    let files = resolve_with_env(REPO, &HubOptions::default(), &offline_env(tmp.path())).unwrap();
    let CheckpointFiles::Safetensors(shards) = files.weights() else {
        panic!("expected safetensors, got {:?}", files.weights());
    };
    assert_eq!(shards.len(), 3);
    assert!(shards.iter().all(|s| s.starts_with(&snapshot)));
    assert_same_model(&files, "sharded");
}

#[test]
fn offline_pytorch_bin_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = make_cache(tmp.path(), "hub_bin", COMMIT, Some("main"));
    let files = resolve_with_env(REPO, &HubOptions::default(), &offline_env(tmp.path())).unwrap();
    assert_eq!(
        files.weights(),
        &CheckpointFiles::Pytorch(snapshot.join("pytorch_model.bin"))
    );
    assert_same_model(&files, "hub_bin");
}

#[test]
fn offline_revision_as_commit_hash() {
    let tmp = tempfile::tempdir().unwrap();
    // Two snapshots; `main` points at the bin one, the safetensors one is reachable only by its hash.
    make_cache(tmp.path(), "hub_bin", COMMIT, Some("main"));
    let st = make_cache(tmp.path(), "st", OTHER_COMMIT, None);
    let env = offline_env(tmp.path());
    let files = resolve_with_env(REPO, &HubOptions::new().with_revision(OTHER_COMMIT), &env).unwrap();
    assert_eq!(files.dir(), st);
    assert_eq!(files.commit(), Some(OTHER_COMMIT));
    assert_same_model(&files, "st");
    let unknown = "1111111111111111111111111111111111111111";
    match resolve_with_env(REPO, &HubOptions::new().with_revision(unknown), &env).unwrap_err() {
        Error::OfflineMissing { revision, .. } => assert_eq!(revision, unknown),
        other => panic!("expected OfflineMissing, got {other:?}"),
    }
}

#[test]
fn offline_pr_revision() {
    // huggingface_hub stores the ref of revision `refs/pr/7` at `refs/refs/pr/7`.
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = make_cache(tmp.path(), "st", OTHER_COMMIT, Some("refs/pr/7"));
    assert!(tmp.path().join(repo_folder_name(REPO)).join("refs/refs/pr/7").is_file());
    let env = offline_env(tmp.path());
    let files = resolve_with_env(REPO, &HubOptions::new().with_revision("refs/pr/7"), &env).unwrap();
    assert_eq!(files.dir(), snapshot);
    assert_same_model(&files, "st");
    // `main` was never fetched.
    assert!(matches!(
        resolve_with_env(REPO, &HubOptions::default(), &env),
        Err(Error::OfflineMissing { .. })
    ));
}

#[test]
fn cache_dir_precedence() {
    let home = Path::new("/home/u");
    assert_eq!(
        cache_dir_from_env(Some("/c"), Some("/h"), Some("/x"), Some(home)),
        Some(PathBuf::from("/c"))
    );
    assert_eq!(
        cache_dir_from_env(None, Some("/h"), Some("/x"), Some(home)),
        Some(PathBuf::from("/h/hub"))
    );
    assert_eq!(
        cache_dir_from_env(None, None, Some("/x"), Some(home)),
        Some(PathBuf::from("/x/huggingface/hub"))
    );
    assert_eq!(
        cache_dir_from_env(None, None, None, Some(home)),
        Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
    );
    assert_eq!(
        cache_dir_from_env(Some(""), Some(""), None, Some(home)),
        Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
    );
    assert_eq!(
        cache_dir_from_env(None, Some("~/hf"), None, Some(home)),
        Some(PathBuf::from("/home/u/hf/hub"))
    );
    assert_eq!(
        cache_dir_from_env(Some("~/c"), None, None, Some(home)),
        Some(PathBuf::from("/home/u/c"))
    );
    assert_eq!(cache_dir_from_env(None, None, None, None), None);
    let env = HubEnv {
        hf_hub_cache: Some("/c".into()),
        hf_home: Some("/h".into()),
        ..HubEnv::default()
    };
    assert_eq!(env.cache_dir(), Some(PathBuf::from("/c")));
    assert_eq!(env.hf_home_dir(), Some(PathBuf::from("/h")));
}

#[test]
fn offline_flag_parsing_and_override() {
    for v in ["1", "true", "TRUE", "on", "Yes"] {
        assert!(is_true(Some(v)), "{v}");
    }
    for v in ["0", "false", "", "no", "off"] {
        assert!(!is_true(Some(v)), "{v}");
    }
    assert!(!is_true(None));
    assert!(HubEnv {
        hf_hub_offline: Some("yes".into()),
        ..HubEnv::default()
    }
    .offline());
    assert!(is_commit_hash(COMMIT));
    assert!(!is_commit_hash("main"));

    // `with_offline(false)` overrides HF_HUB_OFFLINE=1: the resolver goes online (to a closed port here) and fails
    // with a typed network error instead of reading the (empty) cache.
    let tmp = tempfile::tempdir().unwrap();
    let port = closed_port();
    let opts = HubOptions::new()
        .with_offline(false)
        .with_endpoint(format!("http://127.0.0.1:{port}"));
    let start = Instant::now();
    match resolve_with_env(REPO, &opts, &offline_env(tmp.path())).unwrap_err() {
        Error::Hub { repo, file, reason, .. } => {
            assert_eq!(repo, REPO);
            assert_eq!(file, None);
            assert!(reason.contains("network error"), "{reason}");
            assert!(reason.contains("HF_HUB_OFFLINE"), "{reason}");
        }
        other => panic!("expected Hub, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn unreachable_hub_falls_back_on_complete_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = make_cache(tmp.path(), "st", COMMIT, Some("main"));
    let opts = HubOptions::new()
        .with_cache_dir(tmp.path())
        .with_offline(false)
        .with_endpoint(format!("http://127.0.0.1:{}", closed_port()));
    let files = resolve_with_env(REPO, &opts, &HubEnv::default()).unwrap();
    assert_eq!(files.dir(), snapshot);
}

#[test]
fn local_directory_is_used_as_is() {
    let dir = fixture("sharded");
    let files = resolve_with_env(dir.to_str().unwrap(), &HubOptions::default(), &HubEnv::default()).unwrap();
    assert_eq!(files.dir(), dir);
    assert_eq!(files.source(), &ModelSource::LocalDir);
    assert_eq!(files.commit(), None);
    assert!(matches!(files.weights(), CheckpointFiles::Safetensors(s) if s.len() == 3));
    assert_same_model(&files, "sharded");

    let empty = tempfile::tempdir().unwrap();
    let err = resolve_with_env(
        empty.path().to_str().unwrap(),
        &HubOptions::default(),
        &HubEnv::default(),
    );
    assert!(matches!(err, Err(Error::Io { .. })), "{err:?}");
}

#[test]
fn invalid_ids_and_revisions_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let env = offline_env(tmp.path());
    for id in ["", "a/b/c", "../x", "org/..", "org/na me", "org/a--b"] {
        match resolve_with_env(id, &HubOptions::default(), &env) {
            Err(Error::Hub { repo, reason, .. }) => {
                assert_eq!(repo, id);
                assert!(
                    reason.contains("not a valid model id") || reason.contains("valid model id"),
                    "{reason}"
                );
            }
            other => panic!("{id}: expected Hub error, got {other:?}"),
        }
    }
    for rev in ["", "../../etc", "/abs", "refs/../x"] {
        let opts = HubOptions::new().with_revision(rev);
        assert!(
            matches!(resolve_with_env(REPO, &opts, &env), Err(Error::Hub { .. })),
            "{rev}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Online, against a local mock of the hub (model info API + `resolve` file downloads with Range requests).

struct MockHub {
    endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn closed_port() -> u16 {
    // Bind and drop: the port is then (almost certainly) closed, so connecting fails at once.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Serves `files` of `layout` for `REPO` at revision `main` → `COMMIT`, and hub-style errors for anything else.
fn mock_hub(layout: &str) -> MockHub {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in std::fs::read_dir(fixture(layout)).unwrap() {
        let entry = entry.unwrap();
        files.insert(
            entry.file_name().to_string_lossy().into_owned(),
            std::fs::read(entry.path()).unwrap(),
        );
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            serve(stream, &files, &log);
        }
    });
    MockHub { endpoint, requests }
}

/// The request's path and `Range` header; `None` when the request line cannot be read.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Option<String>)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return None;
    }
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
    Some((path, range))
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

fn not_found(stream: &mut TcpStream, code: &str, msg: &str) {
    respond(
        stream,
        "404 Not Found",
        &[("X-Error-Code", code.into()), ("X-Error-Message", msg.into())],
        b"",
    )
}

/// A file download, honouring the `Range` requests hf-hub sends (`bytes=0-0` to probe, then from an offset).
fn serve_file(stream: &mut TcpStream, name: &str, data: &[u8], range: Option<&str>) {
    let start: usize = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let end = match range {
        Some("bytes=0-0") => 1,
        _ => data.len(),
    };
    let body = &data[start.min(data.len())..end];
    let headers = [
        ("ETag", format!("\"etag-{name}\"")),
        ("X-Repo-Commit", COMMIT.to_string()),
        (
            "Content-Range",
            format!("bytes {start}-{}/{}", end.saturating_sub(1), data.len()),
        ),
    ];
    respond(stream, "206 Partial Content", &headers, body);
}

fn serve(mut stream: TcpStream, files: &HashMap<String, Vec<u8>>, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some((path, range)) = read_request(&mut reader) else {
        return;
    };
    log.lock().unwrap().push(path.clone());
    let info_prefix = format!("/api/models/{REPO}/revision/");
    let resolve_prefix = format!("/{REPO}/resolve/{COMMIT}/");
    if let Some(rev) = path.strip_prefix(&info_prefix) {
        if rev != "main" {
            return not_found(&mut stream, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
        }
        let siblings: Vec<String> = files.keys().map(|f| format!("{{\"rfilename\":\"{f}\"}}")).collect();
        let body = format!("{{\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}", siblings.join(","));
        respond(
            &mut stream,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        );
    } else if let Some(name) = path.strip_prefix(&resolve_prefix) {
        let Some(data) = files.get(name) else {
            return not_found(&mut stream, "EntryNotFound", "Entry not found");
        };
        serve_file(&mut stream, name, data, range.as_deref());
    } else if path.starts_with("/api/models/") {
        not_found(&mut stream, "RepoNotFound", "Repository not found")
    } else {
        not_found(&mut stream, "EntryNotFound", "Entry not found")
    }
    // Drain anything left so the client sees a clean close.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(10)));
    let _ = reader.read(&mut [0u8; 64]);
}

fn online_opts(hub: &MockHub, cache: &Path) -> HubOptions {
    HubOptions::new()
        .with_cache_dir(cache)
        .with_offline(false)
        .with_endpoint(hub.endpoint.clone())
}

#[test]
fn online_download_into_cache_then_offline() {
    let hub = mock_hub("sharded");
    let tmp = tempfile::tempdir().unwrap();
    let files = resolve_with_env(REPO, &online_opts(&hub, tmp.path()), &HubEnv::default()).unwrap();
    let snapshot = tmp.path().join(repo_folder_name(REPO)).join("snapshots").join(COMMIT);
    assert_eq!(files.dir(), snapshot);
    assert_eq!(files.commit(), Some(COMMIT));
    assert!(matches!(files.weights(), CheckpointFiles::Safetensors(s) if s.len() == 3));
    assert_same_model(&files, "sharded");
    // The ref is recorded as huggingface_hub records it, so offline mode finds the snapshot.
    let ref_file = tmp.path().join(repo_folder_name(REPO)).join("refs/main");
    assert_eq!(std::fs::read_to_string(ref_file).unwrap(), COMMIT);
    // ... and no stray `refs/<commit>` (hf-hub 0.4 writes one for a pinned download) is left behind.
    let refs: Vec<_> = std::fs::read_dir(tmp.path().join(repo_folder_name(REPO)).join("refs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(refs, vec!["main".to_string()]);
    let offline = resolve_with_env(REPO, &HubOptions::default(), &offline_env(tmp.path())).unwrap();
    assert_eq!(offline, files);

    // A second online resolve asks the API once and downloads nothing.
    let before = hub.requests.lock().unwrap().len();
    let again = resolve_with_env(REPO, &online_opts(&hub, tmp.path()), &HubEnv::default()).unwrap();
    assert_eq!(again, files);
    let after: Vec<String> = hub.requests.lock().unwrap()[before..].to_vec();
    assert_eq!(after, vec![format!("/api/models/{REPO}/revision/main")]);
}

#[test]
fn online_bin_fallback() {
    let hub = mock_hub("hub_bin");
    let tmp = tempfile::tempdir().unwrap();
    let files = resolve_with_env(REPO, &online_opts(&hub, tmp.path()), &HubEnv::default()).unwrap();
    assert!(matches!(files.weights(), CheckpointFiles::Pytorch(_)));
    assert_same_model(&files, "hub_bin");
}

#[test]
fn online_unknown_repo_and_revision_are_typed_errors() {
    let hub = mock_hub("st");
    let tmp = tempfile::tempdir().unwrap();
    let opts = online_opts(&hub, tmp.path());
    match resolve_with_env("test-org/no-such-model", &opts, &HubEnv::default()).unwrap_err() {
        Error::Hub { repo, file, reason, .. } => {
            assert_eq!(repo, "test-org/no-such-model");
            assert_eq!(file, None);
            assert!(reason.contains("repository not found"), "{reason}");
        }
        other => panic!("expected Hub, got {other:?}"),
    }
    let err = resolve_with_env(REPO, &opts.clone().with_revision("no-such-branch"), &HubEnv::default()).unwrap_err();
    match &err {
        Error::Hub { revision, reason, .. } => {
            assert_eq!(revision, "no-such-branch");
            assert!(reason.contains("revision not found"), "{reason}");
        }
        other => panic!("expected Hub, got {other:?}"),
    }
    assert!(err.to_string().contains(REPO), "{err}");
}

#[test]
fn real_hub_unknown_repo_fails_typed_or_is_skipped() {
    // Whatever the network: no network → a typed network error (fast: DNS fails); network → a typed 401/404.
    // Skipped when it takes longer than 10 s (a slow or black-holed network).
    let tmp = tempfile::tempdir().unwrap();
    let opts = HubOptions::new()
        .with_cache_dir(tmp.path())
        .with_offline(false)
        .with_endpoint("https://huggingface.co");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(resolve_with_env(
            "altclip-rs-tests/this-model-does-not-exist",
            &opts,
            &HubEnv::default(),
        ));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Err(Error::Hub { repo, .. })) => assert_eq!(repo, "altclip-rs-tests/this-model-does-not-exist"),
        Ok(other) => panic!("expected a Hub error, got {other:?}"),
        Err(_) => eprintln!("skipped: the hub neither answered nor failed within 10 s"),
    }
}
