//! `export::write_parquet` and `ParquetWriter` on the tiny model (`tests/fixtures/tiny_full`) and the bundled
//! photos, read back with parquet's own Arrow reader: every input one row in input order, embeddings bit-equal to
//! `AltClip::embed_images_partial` / `embed_texts`, error rows in place, row groups of the configured size; and
//! `export::Shard`. The embed tool's `--format parquet` / `--shard` are tested in examples/embed.rs.
#![cfg(feature = "parquet")]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use altclip::export::{self, BatchOptions, Format, InputKind, ParquetOptions, ParquetWriter, Row, Shard};
use altclip::processor::image::ImageInput;
use altclip::{AltClip, Error, ImagePipeline};
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::Array;
use common::invalid;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn clip(batch_size: usize) -> AltClip {
    AltClip::from_dir(common::fixture("tiny_full"), &common::load_options())
        .unwrap()
        .with_image_pipeline(ImagePipeline { batch_size, depth: 2 })
}

/// A Parquet file of embeddings as read back.
#[derive(Debug, PartialEq)]
struct Table {
    label_column: String,
    labels: Vec<String>,
    /// Bits of each embedding (`None`: null).
    embeddings: Vec<Option<Vec<u32>>>,
    errors: Vec<Option<String>>,
    /// File key-value metadata, less `ARROW:schema`.
    metadata: HashMap<String, String>,
    row_group_rows: Vec<i64>,
}

fn read(path: &Path) -> Table {
    let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let file = builder.metadata().file_metadata();
    let metadata = file
        .key_value_metadata()
        .unwrap()
        .iter()
        .filter(|kv| kv.key != "ARROW:schema")
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap()))
        .collect();
    let row_group_rows = builder.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
    let mut table = Table {
        label_column: schema.field(0).name().clone(),
        labels: Vec::new(),
        embeddings: Vec::new(),
        errors: Vec::new(),
        metadata,
        row_group_rows,
    };
    assert_eq!(schema.fields().len(), 3);
    assert!(!schema.field(0).is_nullable() && schema.field(1).is_nullable() && schema.field(2).is_nullable());
    assert_eq!(
        (schema.field(1).name().as_str(), schema.field(2).name().as_str()),
        ("embedding", "error")
    );
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let labels = batch.column(0).as_string::<i32>();
        table.labels.extend(labels.iter().map(|l| l.unwrap().to_string()));
        let embeddings = batch.column(1).as_fixed_size_list();
        for i in 0..embeddings.len() {
            table.embeddings.push(embeddings.is_valid(i).then(|| {
                let row = embeddings.value(i);
                row.as_primitive::<Float32Type>()
                    .values()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            }));
        }
        let errors = batch.column(2).as_string::<i32>();
        table.errors.extend(errors.iter().map(|e| e.map(str::to_string)));
    }
    table
}

fn bits(t: &candle_core::Tensor) -> Vec<Vec<u32>> {
    let rows: Vec<Vec<f32>> = t.to_vec2().unwrap();
    rows.iter().map(|r| r.iter().map(|v| v.to_bits()).collect()).collect()
}

/// Good images and four unreadable ones (text, empty, truncated PNG, missing), interleaved over batches of 3.
fn mixed_images(dir: &Path) -> Vec<PathBuf> {
    let good = |n: &str| repo_path(&format!("examples/images/{n}"));
    let broken = dir.join("broken.png");
    std::fs::write(&broken, b"this is text, not a PNG").unwrap();
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let truncated = dir.join("truncated.png");
    let cat = std::fs::read(good("cat.png")).unwrap();
    std::fs::write(&truncated, &cat[..cat.len() / 3]).unwrap();
    vec![
        good("cat.png"),
        broken,
        good("coffee.png"),
        empty,
        good("astronaut.png"),
        truncated,
        dir.join("missing.png"),
        good("cat.png"),
    ]
}

const TEXTS: [&str; 4] = ["猫", "a cup of coffee", "一只狗在草地上奔跑", "x"];

fn texts() -> Vec<String> {
    TEXTS.iter().map(|t| t.to_string()).collect()
}

fn options(batch_size: usize) -> BatchOptions {
    BatchOptions {
        batch_size,
        strict: false,
    }
}

#[test]
fn images_and_texts_round_trip_bit_equal_with_error_rows_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let images = mixed_images(dir.path());
    let clip = clip(3);
    let out = dir.path().join("out.parquet");
    let mut progress = 0;
    let summary = export::write_parquet(
        &clip,
        &images,
        &texts(),
        &options(3),
        &ParquetOptions::default(),
        &out,
        &mut |n| progress += n,
    )
    .unwrap();
    let (image_file, text_file) = (
        dir.path().join("out.images.parquet"),
        dir.path().join("out.texts.parquet"),
    );
    assert_eq!(summary.files, [image_file.clone(), text_file.clone()]);
    assert_eq!(Format::Parquet.output_files(&out, true, true), summary.files);
    assert_eq!(
        Format::Parquet.output_files(&out, true, false),
        std::slice::from_ref(&out)
    );
    assert_eq!((summary.images, summary.failed, summary.texts, progress), (8, 4, 4, 12));
    assert!(!out.exists());

    // The reference: the same batches through the in-memory API.
    let inputs: Vec<ImageInput> = images.iter().map(|p| ImageInput::Path(p)).collect();
    let partial = clip.embed_images_partial(&inputs).unwrap();
    assert_eq!(partial.ok, [0, 2, 4, 7]);
    let want = bits(partial.embeddings.as_ref().unwrap());
    let table = read(&image_file);
    assert_eq!(table.label_column, "path");
    let labels: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(table.labels, labels);
    let metadata: HashMap<String, String> =
        [("model".into(), clip.name().to_string()), ("dim".into(), "24".into())].into();
    assert_eq!(table.metadata, metadata);
    assert_eq!(table.row_group_rows, [8]);
    for (k, &i) in partial.ok.iter().enumerate() {
        assert_eq!(table.embeddings[i].as_ref(), Some(&want[k]), "row {i}");
        assert_eq!(table.errors[i], None, "row {i}");
    }
    for (i, err) in &partial.failed {
        assert_eq!(table.embeddings[*i], None, "row {i}");
        assert_eq!(table.errors[*i].as_deref(), Some(err.to_string().as_str()), "row {i}");
        assert!(
            err.to_string()
                .contains(images[*i].file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
    }

    // Texts: embed_texts over the same chunks of 3.
    let table = read(&text_file);
    assert_eq!(
        (table.label_column.as_str(), table.labels.as_slice()),
        ("text", texts().as_slice())
    );
    assert_eq!(table.metadata, metadata);
    let mut want = Vec::new();
    for chunk in TEXTS.chunks(3) {
        want.extend(bits(&clip.embed_texts(chunk).unwrap()).into_iter().map(Some));
    }
    assert_eq!(table.embeddings, want);
    assert_eq!(table.errors, [None, None, None, None]);
}

#[test]
fn small_row_groups_bound_the_buffer_and_keep_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let images = mixed_images(dir.path());
    let clip = clip(3);
    let write = |name: &str, row_group_size| {
        let out = dir.path().join(name);
        let parquet = ParquetOptions { row_group_size };
        export::write_parquet(&clip, &images, &[], &options(3), &parquet, &out, &mut |_| {}).unwrap();
        read(&out)
    };
    let one = write("one.parquet", 1024);
    let small = write("small.parquet", 3);
    assert_eq!(one.row_group_rows, [8]);
    // Batches of 3 rows into row groups of 3: 3 + 3 + 2.
    assert_eq!(small.row_group_rows, [3, 3, 2]);
    let odd = write("odd.parquet", 5);
    assert_eq!(odd.row_group_rows, [5, 3]);
    for t in [&small, &odd] {
        assert_eq!(
            (&t.labels, &t.embeddings, &t.errors),
            (&one.labels, &one.embeddings, &one.errors)
        );
    }
    // Texts alone go to `path` itself.
    let texts_only = dir.path().join("texts.parquet");
    let parquet = ParquetOptions { row_group_size: 1 };
    export::write_parquet(&clip, &[], &texts(), &options(2), &parquet, &texts_only, &mut |_| {}).unwrap();
    let table = read(&texts_only);
    assert_eq!((table.label_column.as_str(), table.row_group_rows.len()), ("text", 4));
}

#[test]
fn strict_stops_at_the_first_failure_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let images = mixed_images(dir.path());
    let out = dir.path().join("strict.parquet");
    let strict = BatchOptions {
        batch_size: 3,
        strict: true,
    };
    let write = |images: &[PathBuf]| {
        export::write_parquet(
            &clip(3),
            images,
            &[],
            &strict,
            &ParquetOptions::default(),
            &out,
            &mut |_| {},
        )
    };
    let err = write(&images).err().unwrap();
    assert!(err.to_string().contains("broken.png"), "{err}");
    assert!(!out.exists());
    // Strict on readable images writes them all.
    write(&[images[0].clone(), images[2].clone()]).unwrap();
    assert_eq!(read(&out).errors, [None, None]);
}

#[test]
fn bad_arguments_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.parquet");
    let clip = clip(3);
    let write = |images: &[PathBuf], texts: &[String], batch: usize, row_group_size| {
        let parquet = ParquetOptions { row_group_size };
        export::write_parquet(&clip, images, texts, &options(batch), &parquet, &out, &mut |_| {})
    };
    assert!(invalid(write(&[], &[], 3, 8)).contains("nothing to embed"));
    assert!(invalid(write(&[], &texts(), 0, 8)).starts_with("batch_size"));
    assert!(invalid(write(&[], &texts(), 3, 0)).starts_with("row_group_size"));
    let unwritable = Path::new("/proc/definitely-not-writable/x.parquet");
    let err = export::write_parquet(
        &clip,
        &[],
        &texts(),
        &options(3),
        &ParquetOptions::default(),
        unwritable,
        &mut |_| {},
    );
    assert!(matches!(err, Err(Error::Io { path, .. }) if path == unwritable));
    // A row of the wrong width is refused, naming it.
    let mut writer = ParquetWriter::create(&out, InputKind::Texts, "m", 2, &ParquetOptions::default()).unwrap();
    let rows = [Row {
        label: "a",
        embedding: Ok(&[1.0, 2.0, 3.0][..]),
    }];
    match writer.write(&rows) {
        Err(Error::BadInput {
            input: "embedding",
            reason,
        }) => assert!(reason.contains("3 values"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let ok = [Row {
        label: "b",
        embedding: Ok(&[0.5, -0.5][..]),
    }];
    writer.write(&ok).unwrap();
    assert_eq!(writer.finish().unwrap(), 1);
    assert_eq!(
        read(&out).embeddings,
        [Some(vec![0.5f32.to_bits(), (-0.5f32).to_bits()])]
    );
    // The format parses; `Embeddings` (embedded rows only) does not write it.
    assert!(matches!("Parquet".parse(), Ok(Format::Parquet)));
    let emb = export::embed_batches(&clip, &[], &texts(), &options(3), &mut |_| {}).unwrap();
    assert!(invalid(emb.save(Format::Parquet, &out)).contains("write_parquet"));
}

#[test]
fn shards_tile_the_sorted_inputs_disjointly_and_deterministically() {
    let inputs: Vec<String> = ["j", "b", "é", "a", "c/d", "c-d", "i", "h", "g", "f"]
        .map(String::from)
        .to_vec();
    let mut sorted = inputs.clone();
    sorted.sort();
    for count in [1, 2, 3, 7] {
        let shards: Vec<Vec<String>> = (0..count)
            .map(|i| Shard::new(i, count).unwrap().take(inputs.clone()))
            .collect();
        assert_eq!(shards.concat(), sorted, "{count} shards");
        let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
        // The same slices from any input order.
        let mut reversed = inputs.clone();
        reversed.reverse();
        for (i, shard) in shards.iter().enumerate() {
            assert_eq!(&Shard::new(i, count).unwrap().take(reversed.clone()), shard);
        }
    }
    let ranges: Vec<_> = (0..3).map(|i| Shard::new(i, 3).unwrap().range(10)).collect();
    assert_eq!(ranges, [0..3, 3..6, 6..10]);
    // Byte order of the strings ("c-d" < "c/d"), as Python's sorted() over str; paths alike.
    assert_eq!(
        Shard::new(0, 1).unwrap().take(vec!["c/d", "c-d", "é", "z"]),
        ["c-d", "c/d", "z", "é"]
    );
    let paths = vec![PathBuf::from("a/b"), PathBuf::from("a-b")];
    assert_eq!(
        Shard::default().take(paths),
        [PathBuf::from("a-b"), PathBuf::from("a/b")]
    );
    assert_eq!(Shard::new(0, 4).unwrap().range(usize::MAX), 0..usize::MAX / 4);
    let shard: Shard = " 2/7 ".parse().unwrap();
    assert_eq!(
        (shard.index(), shard.count(), shard.to_string()),
        (2, 7, "2/7".to_string())
    );
}

#[test]
fn bad_shards_are_typed_errors_naming_the_field() {
    let reason = |s: &str| invalid(s.parse::<Shard>());
    assert!(
        reason("3/3").contains("index 3 must be below the count 3"),
        "{}",
        reason("3/3")
    );
    assert!(reason("1/0").contains("count must be at least 1"), "{}", reason("1/0"));
    assert!(reason("a/b").contains("the index \"a\""), "{}", reason("a/b"));
    assert!(reason("1/b").contains("the count \"b\""), "{}", reason("1/b"));
    assert!(reason("-1/2").contains("the index \"-1\""), "{}", reason("-1/2"));
    assert!(reason("1").contains("expected I/N"), "{}", reason("1"));
    assert!(reason("1").starts_with("shard: "));
    assert!(invalid(Shard::new(0, 0)).starts_with("shard"));
}
