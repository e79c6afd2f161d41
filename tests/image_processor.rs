//! Parity of the image processor with transformers' `CLIPImageProcessorPil` (Pillow 13, transformers 5.x).
//!
//! Fixtures come from `scripts/make_image_fixtures.py` (see `tests/fixtures/images/manifest.json`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use altclip::processor::image::{
    center_crop, convert_to_rgb, load_image, CropSize, DecodeLimits, DecodeOptions, ImageInput, ImageProcessor,
    ImageProcessorConfig, RawFormat, SizeSpec,
};
use altclip::processor::resize::Filter;
use altclip::Error;
use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde_json::Value;

// JPEG: with the default `libjpeg-turbo` feature the crate decodes with the library Pillow bundles, configured as
// Pillow configures it, so JPEG is exact like the lossless formats (decoded pixels, uint8 after resize + crop, and
// pixel_values). With only `pure-rust-jpeg` (zune-jpeg) each JPEG case is held to the `pure_rust_bound` measured for
// it in the manifest (max |Δ| of the uint8 image after resize + crop).
/// Whether JPEG goes through libjpeg-turbo (and must be bit-identical to Pillow).
const JPEG_EXACT: bool = cfg!(feature = "libjpeg-turbo");
/// Lossy WebP: image-webp decodes the fixture bit-identically to libwebp (measured: max 0, 100%).
const WEBP_LOSSY_MAX_DIFF: u8 = 0;
const WEBP_LOSSY_MIN_IDENTICAL: f64 = 1.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

fn manifest() -> &'static Value {
    static M: OnceLock<Value> = OnceLock::new();
    M.get_or_init(|| {
        let text = std::fs::read_to_string(root().join("manifest.json"))
            .expect("tests/fixtures/images/manifest.json (run scripts/make_image_fixtures.py)");
        serde_json::from_str(&text).unwrap()
    })
}

fn expected(config: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(root().join(format!("expected_{config}.safetensors")), &Device::Cpu).unwrap()
}

fn processor(config: &str) -> ImageProcessor {
    let kwargs = &manifest()["configs"][config]["kwargs"];
    ImageProcessor::from_json_str(&kwargs.to_string()).unwrap()
}

fn case(name: &str) -> &'static Value {
    manifest()["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// HWC RGB image -> CHW bytes (the layout of the fixtures).
fn chw(img: &RgbImage) -> Vec<u8> {
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0u8; plane * 3];
    for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = p[c];
        }
    }
    out
}

fn u8_of(t: &Tensor) -> (Vec<usize>, Vec<u8>) {
    (t.dims().to_vec(), t.flatten_all().unwrap().to_vec1::<u8>().unwrap())
}

fn f32_of(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    max: u8,
    identical: usize,
    total: usize,
}

impl Stats {
    fn of(a: &[u8], b: &[u8]) -> Stats {
        assert_eq!(a.len(), b.len());
        let mut s = Stats {
            total: a.len(),
            ..Stats::default()
        };
        for (&x, &y) in a.iter().zip(b) {
            let d = x.abs_diff(y);
            s.max = s.max.max(d);
            s.identical += usize::from(d == 0);
        }
        s
    }
    fn frac(&self) -> f64 {
        self.identical as f64 / self.total.max(1) as f64
    }
}

/// Runs one fixture image through `p`, checking shape; returns (ours CHW, expected CHW).
fn run_case(p: &ImageProcessor, e: &HashMap<String, Tensor>, name: &str) -> (RgbImage, Vec<u8>) {
    let path = root().join(case(name)["file"].as_str().unwrap());
    let ours = p
        .preprocess_u8(&ImageInput::Path(&path))
        .unwrap_or_else(|err| panic!("{name}: {err}"));
    let (dims, want) = u8_of(&e[&format!("{name}.u8")]);
    assert_eq!(
        dims,
        vec![3, ours.height() as usize, ours.width() as usize],
        "{name}: output size"
    );
    (ours, want)
}

#[test]
fn lossless_formats_are_bit_identical_for_every_config() {
    let configs = manifest()["configs"].as_object().unwrap();
    let mut checked = 0;
    let mut per_kind: HashMap<String, usize> = HashMap::new();
    for (cname, c) in configs {
        let p = processor(cname);
        let e = expected(cname);
        let (_, table) = u8_of(&Tensor::new(&[0u8], &Device::Cpu).unwrap());
        drop(table);
        let norm = f32_of(&e["norm_table"]);
        let ours_table = p.config.pixel_value_table();
        for ch in 0..3 {
            for v in 0..256 {
                assert_eq!(
                    ours_table[ch][v].to_bits(),
                    norm[ch * 256 + v].to_bits(),
                    "{cname}: pixel value of level {v} in channel {ch}"
                );
            }
        }
        for name in c["images"].as_array().unwrap() {
            let name = name.as_str().unwrap();
            if !case(name)["exact"].as_bool().unwrap() || (is_jpeg(name) && !JPEG_EXACT) {
                continue;
            }
            let (ours, want) = run_case(&p, &e, name);
            let s = Stats::of(&chw(&ours), &want);
            assert_eq!(
                s.identical, s.total,
                "{cname}/{name}: {s:?} (not bit-identical to Pillow)"
            );
            // pixel_values: bit-identical to transformers where stored in full
            if let Some(pv) = e.get(&format!("{name}.pv")) {
                let want = f32_of(pv);
                let got = p.pixel_values(&ours);
                let max = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(max <= 1e-6, "{cname}/{name}: pixel_values max diff {max}");
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
            checked += 1;
            *per_kind
                .entry(case(name)["kind"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    println!("bit-identical (image, config) pairs: {checked}; by format: {per_kind:?}");
    for kind in ["png", "bmp", "gif", "webp", "tiff"] {
        assert!(per_kind.get(kind).copied().unwrap_or(0) > 0, "no {kind} case checked");
    }
    if JPEG_EXACT {
        assert!(per_kind.get("jpeg").copied().unwrap_or(0) >= 25, "{per_kind:?}");
    }
}

fn is_jpeg(name: &str) -> bool {
    case(name)["kind"] == "jpeg"
}

/// Decoded pixels (before any resize) of every JPEG fixture against Pillow's `Image.open(f).convert("RGB")`,
/// through the CRC-32 the generator stored for each.
#[test]
fn jpeg_decode_is_bit_identical_to_pillow() {
    let mut checked = 0;
    for c in manifest()["images"].as_array().unwrap() {
        if c["kind"] != "jpeg" {
            continue;
        }
        let name = c["name"].as_str().unwrap();
        let file = root().join(c["file"].as_str().unwrap());
        let ours = load_image(&ImageInput::Path(&file), &DecodeOptions::default()).unwrap();
        let shape: Vec<u64> = c["decoded"]["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(shape, [u64::from(ours.height()), u64::from(ours.width()), 3], "{name}");
        let crc = crc32fast::hash(ours.as_raw());
        if JPEG_EXACT {
            assert_eq!(
                u64::from(crc),
                c["decoded"]["crc32"].as_u64().unwrap(),
                "{name}: decoded pixels differ"
            );
        }
        checked += 1;
    }
    assert!(checked >= 25, "{checked} JPEG fixtures");
}

#[test]
fn lossy_formats_within_measured_bounds() {
    let mut table = Vec::new();
    for (cname, c) in manifest()["configs"].as_object().unwrap() {
        let p = processor(cname);
        let e = expected(cname);
        for name in c["images"].as_array().unwrap() {
            let name = name.as_str().unwrap();
            let cs = case(name);
            let pure_rust_jpeg = is_jpeg(name) && !JPEG_EXACT;
            if cs["exact"].as_bool().unwrap() && !pure_rust_jpeg {
                continue;
            }
            let (ours, want) = run_case(&p, &e, name);
            let s = Stats::of(&chw(&ours), &want);
            let (max_diff, min_ident) = if pure_rust_jpeg {
                (cs["pure_rust_bound"].as_u64().unwrap() as u8, 0.0)
            } else {
                (WEBP_LOSSY_MAX_DIFF, WEBP_LOSSY_MIN_IDENTICAL)
            };
            table.push(format!(
                "{cname:>20} {name:<28} max diff {:>2}  identical {:6.2}%",
                s.max,
                100.0 * s.frac()
            ));
            assert!(s.max <= max_diff, "{cname}/{name}: {s:?}");
            assert!(s.frac() >= min_ident, "{cname}/{name}: {s:?}");
        }
    }
    println!("{}", table.join("\n"));
}

/// Decoder-level comparison with Pillow for the lossy formats (before any resize), when the generator has left
/// `scripts/out/decoded_lossy.safetensors` behind (it is not committed). Prints the table, asserts the bounds.
#[test]
fn decoder_report() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/out/decoded_lossy.safetensors");
    let Ok(dec) = candle_core::safetensors::load(&path, &Device::Cpu) else {
        println!(
            "{} absent; run scripts/make_image_fixtures.py for the decoder report",
            path.display()
        );
        return;
    };
    let mut names: Vec<_> = dec.keys().cloned().collect();
    names.sort();
    for name in names {
        let (dims, want) = u8_of(&dec[&name]);
        let file = root().join(case(&name)["file"].as_str().unwrap());
        let ours = load_image(&ImageInput::Path(&file), &DecodeOptions::default()).unwrap();
        assert_eq!(dims, vec![ours.height() as usize, ours.width() as usize, 3], "{name}");
        let s = Stats::of(ours.as_raw(), &want);
        println!(
            "decoded {name:<28} max diff {:>3}  identical {:6.2}%",
            s.max,
            100.0 * s.frac()
        );
        // Pure-Rust JPEG decoding is only measured here (the bound applies after resize + crop).
        let (jpeg, bound) = (name.ends_with(".jpg"), WEBP_LOSSY_MAX_DIFF);
        if !jpeg || JPEG_EXACT {
            assert!(s.max <= if jpeg { 0 } else { bound }, "{name}: {s:?}");
        }
    }
}

#[test]
fn raw_rgba_follows_transformers_numpy_path() {
    let p = processor("a_se56_c48_bicubic");
    let e = expected("a_se56_c48_bicubic");
    let img = image::open(root().join("inputs/rgba_128x96.png")).unwrap().to_rgba8();
    let input = ImageInput::Raw {
        data: img.as_raw(),
        width: img.width(),
        height: img.height(),
        format: RawFormat::Rgba8,
    };
    let ours = p.preprocess_u8(&input).unwrap();
    let (_, want) = u8_of(&e["raw_rgba_128x96.u8"]);
    assert_eq!(chw(&ours), want);
    let pv = p.pixel_values(&ours);
    assert!(pv
        .iter()
        .zip(f32_of(&e["raw_rgba_128x96.pv"]))
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // ... which differs from Pillow's integer alpha_composite for the same pixels as an RGBA PNG.
    let (_, via_pil) = u8_of(&e["rgba_128x96.png.u8"]);
    let ours_png = p
        .preprocess_u8(&ImageInput::Path(&root().join("inputs/rgba_128x96.png")))
        .unwrap();
    assert_eq!(chw(&ours_png), via_pil);

    // RGB and L raw buffers equal the decoded image.
    let rgb = image::open(root().join("inputs/rgb_200x150.png")).unwrap().to_rgb8();
    let raw = ImageInput::Raw {
        data: rgb.as_raw(),
        width: 200,
        height: 150,
        format: RawFormat::Rgb8,
    };
    let (_, want) = u8_of(&e["rgb_200x150.png.u8"]);
    assert_eq!(chw(&p.preprocess_u8(&raw).unwrap()), want);
    let l = image::open(root().join("inputs/l_120x90.png")).unwrap().to_luma8();
    let raw = ImageInput::Raw {
        data: l.as_raw(),
        width: 120,
        height: 90,
        format: RawFormat::L8,
    };
    let (_, want) = u8_of(&e["l_120x90.png.u8"]);
    assert_eq!(chw(&p.preprocess_u8(&raw).unwrap()), want);
}

#[test]
fn inputs_agree_across_kinds() {
    let p = processor("a_se56_c48_bicubic");
    let path = root().join("inputs/p_trns_100x80.png");
    let bytes = std::fs::read(&path).unwrap();
    let dynimg = image::load_from_memory(&bytes).unwrap();
    let a = p.preprocess_u8(&ImageInput::Path(&path)).unwrap();
    let b = p.preprocess_u8(&ImageInput::Bytes(&bytes)).unwrap();
    let c = p.preprocess_u8(&ImageInput::Dynamic(&dynimg)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    // format is sniffed, not taken from the extension
    let dir = std::env::temp_dir().join(format!("altclip-img-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let misnamed = dir.join("actually_png.jpg");
    std::fs::write(&misnamed, &bytes).unwrap();
    assert_eq!(p.preprocess_u8(&ImageInput::Path(&misnamed)).unwrap(), a);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn exif_orientation_is_optional() {
    let p = processor("a_se56_c48_bicubic");
    let e = expected("a_se56_c48_bicubic");
    let path = root().join("inputs/jpeg_exif6_120x80.jpg");
    let plain = p.preprocess_u8(&ImageInput::Path(&path)).unwrap();
    let (_, want_plain) = u8_of(&e["jpeg_exif6_120x80.jpg.u8"]);
    let bound = if JPEG_EXACT {
        0
    } else {
        case("jpeg_exif6_120x80.jpg")["pure_rust_bound"].as_u64().unwrap() as u8
    };
    let s = Stats::of(&chw(&plain), &want_plain);
    assert!(s.max <= bound, "{s:?}");
    let rotated = p
        .clone()
        .with_exif_orientation(true)
        .preprocess_u8(&ImageInput::Path(&path))
        .unwrap();
    let (_, want_rot) = u8_of(&e["jpeg_exif6_120x80.jpg.exif.u8"]);
    let s = Stats::of(&chw(&rotated), &want_rot);
    assert!(s.max <= bound, "{s:?}");
    // and the two really differ
    assert!(Stats::of(&chw(&plain), &chw(&rotated)).max > 50);
    let full = load_image(
        &ImageInput::Path(&path),
        &DecodeOptions {
            apply_exif_orientation: true,
            ..DecodeOptions::default()
        },
    )
    .unwrap();
    assert_eq!((full.width(), full.height()), (80, 120));
}

#[test]
fn batch_tensor_matches_single_images() {
    let p = processor("a_se56_c48_bicubic");
    let names = [
        "rgb_200x150.png",
        "rgba_128x96.png",
        "rgb_13x9.png",
        "l16_80x60.png",
        "p_trns_100x80.png",
    ];
    let paths: Vec<PathBuf> = names.iter().map(|n| root().join("inputs").join(n)).collect();
    let inputs: Vec<ImageInput> = paths.iter().map(|p| ImageInput::Path(p)).collect();
    let t = p.preprocess(&inputs, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(t.dims(), &[5, 3, 48, 48]);
    let e = expected("a_se56_c48_bicubic");
    for (i, n) in names.iter().enumerate() {
        let got = f32_of(&t.get(i).unwrap());
        let want = f32_of(&e[&format!("{n}.pv")]);
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{n}");
    }
    let h = p.preprocess(&inputs, &Device::Cpu, DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    let back = h.to_dtype(DType::F32).unwrap();
    let diff = (back - &t)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 2e-3, "{diff}");
    assert!(matches!(
        p.preprocess(&inputs, &Device::Cpu, DType::U8),
        Err(Error::BadInput { .. })
    ));
    assert!(matches!(
        p.preprocess(&[], &Device::Cpu, DType::F32),
        Err(Error::BadInput { .. })
    ));

    // no crop + aspect-keeping resize: different sizes cannot be batched
    let mut cfg = p.config.clone();
    cfg.do_center_crop = false;
    let q = ImageProcessor::new(cfg);
    let mixed = [inputs[0], inputs[2]]; // 200x150 -> 74x56, 13x9 -> 80x56
    assert!(matches!(
        q.preprocess(&mixed, &Device::Cpu, DType::F32),
        Err(Error::BadInput { .. })
    ));
    assert_eq!(
        q.preprocess(&inputs[..1], &Device::Cpu, DType::F32).unwrap().dims(),
        &[1, 3, 56, 74]
    );
}

#[test]
fn default_clip_config_224() {
    let p = ImageProcessor::new(ImageProcessorConfig::default());
    assert_eq!(p, processor("clip224"));
    let e = expected("clip224");
    let (ours, want) = run_case(&p, &e, "rgb_1000x700.png");
    assert_eq!(chw(&ours), want);
    assert_eq!((ours.width(), ours.height()), (224, 224));
}

// -----------------------------------------------------------------------------------------------------------
// configuration

fn size_json(s: &SizeSpec) -> Value {
    s.to_json()
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), sorted(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn config_forms_resolve_like_transformers() {
    let dir = root().join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(stem) = name.strip_suffix(".expected.json") else {
            continue;
        };
        let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let cfg = ImageProcessorConfig::from_file(dir.join(format!("{stem}.json"))).unwrap();
        let c = CropSize {
            height: want["crop_size"]["height"].as_u64().unwrap() as u32,
            width: want["crop_size"]["width"].as_u64().unwrap() as u32,
        };
        assert_eq!(sorted(&size_json(&cfg.size)), sorted(&want["size"]), "{stem}: size");
        assert_eq!(cfg.crop_size, c, "{stem}: crop_size");
        assert_eq!(
            u64::from(cfg.resample.pil_code()),
            want["resample"].as_u64().unwrap(),
            "{stem}"
        );
        for key in [
            "do_resize",
            "do_center_crop",
            "do_rescale",
            "do_normalize",
            "do_convert_rgb",
        ] {
            let got = match key {
                "do_resize" => cfg.do_resize,
                "do_center_crop" => cfg.do_center_crop,
                "do_rescale" => cfg.do_rescale,
                "do_normalize" => cfg.do_normalize,
                _ => cfg.do_convert_rgb,
            };
            assert_eq!(got, want[key].as_bool().unwrap(), "{stem}: {key}");
        }
        // exact f64 equality: same decimal strings parse to the same doubles as in Python
        assert_eq!(
            cfg.rescale_factor.to_bits(),
            want["rescale_factor"].as_f64().unwrap().to_bits(),
            "{stem}"
        );
        for c in 0..3 {
            assert_eq!(
                cfg.image_mean[c],
                want["image_mean"][c].as_f64().unwrap(),
                "{stem}: mean"
            );
            assert_eq!(cfg.image_std[c], want["image_std"][c].as_f64().unwrap(), "{stem}: std");
        }
        // serde round trip through the hub form
        let back: ImageProcessorConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg, "{stem}: serde round trip");
        n += 1;
    }
    assert!(n >= 9, "only {n} config forms checked");
    assert_eq!(
        ImageProcessorConfig::from_file(dir.join("altclip_hub.json")).unwrap(),
        ImageProcessorConfig::default()
    );
    // Kosmos-2's use_square_size and default_to_square
    let c = ImageProcessorConfig::from_json_str(r#"{"use_square_size": true, "size": 100}"#).unwrap();
    assert_eq!(
        c.size,
        SizeSpec::HeightWidth {
            height: 224,
            width: 224
        }
    );
    let c = ImageProcessorConfig::from_json_str(r#"{"default_to_square": true, "size": 100}"#).unwrap();
    assert_eq!(
        c.size,
        SizeSpec::HeightWidth {
            height: 100,
            width: 100
        }
    );
}

#[test]
fn bad_configs_give_typed_errors() {
    let dir = root().join("configs");
    for (stem, field) in [
        ("bad_resample_mks", "resample"),
        ("bad_resample_99", "resample"),
        ("bad_size_keys", "size"),
        ("bad_size_longest_only", "size"),
        ("bad_size_zero", "size.shortest_edge"),
        ("bad_mean_len", "image_mean"),
        ("bad_std_zero", "image_std"),
        ("bad_crop_dict", "crop_size"),
    ] {
        match ImageProcessorConfig::from_file(dir.join(format!("{stem}.json"))) {
            Err(Error::InvalidConfig { field: f, reason }) => {
                assert_eq!(f, field, "{stem}: {reason}");
            }
            other => panic!("{stem}: expected InvalidConfig, got {other:?}"),
        }
    }
    match ImageProcessorConfig::from_file(dir.join("bad_json.json")) {
        Err(Error::Json { what, .. }) => assert!(what.ends_with("bad_json.json")),
        other => panic!("bad_json: {other:?}"),
    }
    assert!(matches!(
        ImageProcessorConfig::from_file(dir.join("missing.json")),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        ImageProcessorConfig::from_json_str(r#"{"resample": "bicubic"}"#),
        Err(Error::InvalidConfig { .. })
    ));
}

// -----------------------------------------------------------------------------------------------------------
// bad inputs

#[test]
fn bad_files_give_typed_errors_naming_the_input() {
    let p = ImageProcessor::default();
    for b in manifest()["bad"].as_array().unwrap() {
        let rel = b["file"].as_str().unwrap();
        let path = root().join(rel);
        let t = std::time::Instant::now();
        if !JPEG_EXACT && b.get("pure_rust_decodes").is_some() {
            // zune-jpeg fills a truncated scan instead of failing as Pillow does (documented in the README)
            assert!(p.preprocess_u8(&ImageInput::Path(&path)).is_ok(), "{rel}");
            continue;
        }
        let err = p.preprocess_u8(&ImageInput::Path(&path)).unwrap_err();
        assert!(t.elapsed().as_secs_f64() < 5.0, "{rel} took {:?}", t.elapsed());
        let msg = err.to_string();
        assert!(msg.contains(path.to_str().unwrap()), "{rel}: {msg}");
        match &err {
            Error::ImageDecode { source, .. } => {
                if b.get("limits").is_some() && (rel.ends_with(".png") || JPEG_EXACT) {
                    assert!(matches!(source, image::ImageError::Limits(_)), "{rel}: {source:?}");
                }
            }
            Error::InvalidImage { .. } => {}
            other => panic!("{rel}: unexpected error {other:?}"),
        }
        // the same bytes in a batch are named by index
        let bytes = std::fs::read(&path).unwrap();
        let good = std::fs::read(root().join("inputs/rgb_13x9.png")).unwrap();
        let inputs = [ImageInput::Bytes(&good), ImageInput::Bytes(&bytes)];
        let err = p.preprocess(&inputs, &Device::Cpu, DType::F32).unwrap_err();
        assert!(err.to_string().contains("<bytes #1>"), "{rel}: {err}");
        println!("{rel:<32} -> {err}");
    }
    // limits are configurable
    let small = p.clone().with_limits(DecodeLimits {
        max_width: 100,
        max_height: 100,
        ..DecodeLimits::default()
    });
    let err = small
        .preprocess_u8(&ImageInput::Path(&root().join("inputs/rgb_200x150.png")))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ImageDecode {
                source: image::ImageError::Limits(_),
                ..
            }
        ),
        "{err:?}"
    );
    // a missing file is an I/O error naming the path
    assert!(matches!(
        p.preprocess_u8(&ImageInput::Path(Path::new("/nonexistent/x.png"))),
        Err(Error::Io { .. })
    ));
}

#[test]
fn bad_buffers_give_typed_errors() {
    let p = ImageProcessor::default();
    let data = vec![0u8; 10 * 10 * 3];
    for (w, h, f) in [
        (10, 10, RawFormat::Rgba8),
        (10, 11, RawFormat::Rgb8),
        (0, 0, RawFormat::Rgb8),
        (0, 5, RawFormat::L8),
    ] {
        let input = ImageInput::Raw {
            data: if w == 0 { &[] } else { &data },
            width: w,
            height: h,
            format: f,
        };
        match p.preprocess_u8(&input) {
            Err(Error::InvalidImage { input, .. }) => assert_eq!(input, "<raw #0>"),
            other => panic!("{w}x{h} {f:?}: {other:?}"),
        }
    }
    let empty = image::DynamicImage::new_rgb8(0, 0);
    assert!(matches!(
        p.preprocess_u8(&ImageInput::Dynamic(&empty)),
        Err(Error::InvalidImage { .. })
    ));
    assert!(matches!(
        p.preprocess_u8(&ImageInput::Bytes(&[])),
        Err(Error::InvalidImage { .. })
    ));
    // do_convert_rgb = false accepts RGB only
    let q = ImageProcessor::new(ImageProcessorConfig {
        do_convert_rgb: false,
        ..ImageProcessorConfig::default()
    });
    let l = image::DynamicImage::new_luma8(4, 4);
    assert!(matches!(
        q.preprocess_u8(&ImageInput::Dynamic(&l)),
        Err(Error::InvalidImage { .. })
    ));
    let rgb = image::DynamicImage::new_rgb8(4, 4);
    assert!(q.preprocess_u8(&ImageInput::Dynamic(&rgb)).is_ok());
    // a resize to zero pixels (max_height/max_width on an extreme aspect ratio) is an error, not a panic
    let cfg = ImageProcessorConfig::from_json_str(r#"{"size": {"max_height": 10, "max_width": 10}}"#).unwrap();
    let thin = image::DynamicImage::new_rgb8(1000, 1);
    assert!(matches!(
        ImageProcessor::new(cfg).preprocess_u8(&ImageInput::Dynamic(&thin)),
        Err(Error::InvalidImage { .. })
    ));
}

#[test]
fn public_helpers() {
    // center_crop on an odd-size image matches transformers' floor offsets
    let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let c = center_crop(&img, 2, 2);
    assert_eq!(c.get_pixel(0, 0).0, [1, 1, 7]);
    // convert_to_rgb on a fully transparent pixel gives white, on opaque keeps the colour
    let rgba = image::DynamicImage::ImageRgba8(
        image::RgbaImage::from_raw(2, 1, vec![10, 20, 30, 0, 10, 20, 30, 255]).unwrap(),
    );
    assert_eq!(convert_to_rgb(&rgba).as_raw(), &vec![255, 255, 255, 10, 20, 30]);
    assert_eq!(Filter::from_pil_code(3), Some(Filter::Bicubic));
}

#[test]
fn resize_matches_pillow_for_every_filter() {
    let e = candle_core::safetensors::load(root().join("expected_resize.safetensors"), &Device::Cpu).unwrap();
    let (dims, src) = u8_of(&e["input"]);
    let (h, w) = (dims[0], dims[1]);
    let grid = &manifest()["resize_grid"];
    let mut n = 0;
    for code in grid["filters"].as_array().unwrap() {
        let code = code.as_i64().unwrap();
        let filter = Filter::from_pil_code(code).unwrap();
        for size in grid["sizes"].as_array().unwrap() {
            let (nw, nh) = (size[0].as_u64().unwrap() as usize, size[1].as_u64().unwrap() as usize);
            let (_, want) = u8_of(&e[&format!("{code}/{nw}x{nh}")]);
            let got = altclip::processor::resize::resize_rgb8(&src, w, h, nw, nh, filter).unwrap();
            let s = Stats::of(&got, &want);
            assert_eq!(s.identical, s.total, "{filter} {w}x{h} -> {nw}x{nh}: {s:?}");
            n += 1;
        }
    }
    assert_eq!(n, 6 * 15);
}
