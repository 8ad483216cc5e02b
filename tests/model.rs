//! The bundled model package: golden parity with the PyTorch float64 reference, the fused CPU op
//! against plain candle-nn layers, and refusal of damaged packages with a precise reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use pixguard::features::FeatureBatch;
use pixguard::model::{ModelPackage, PackageError, Scorer};
use pixguard::transaction::Transaction;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

const PACKAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/pix-fraud");

fn golden() -> (Vec<Transaction>, Vec<f64>) {
    let text =
        std::fs::read_to_string(Path::new(PACKAGE).join("golden.jsonl")).expect("golden.jsonl");
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("golden line is JSON");
            let tx = Transaction::from_json(v["transaction"].to_string().as_bytes())
                .expect("golden transaction is valid");
            (tx, v["score"].as_f64().expect("golden score"))
        })
        .unzip()
}

#[test]
fn scores_match_the_pytorch_float64_reference() {
    let scorer = Scorer::load(PACKAGE, &Device::Cpu).expect("bundled package loads");
    let (txs, reference) = golden();
    assert_eq!(txs.len(), 1000);
    let mut batch = FeatureBatch::default();
    let mut worst = (0.0f64, 0usize);
    // Odd chunk sizes exercise the fused op's chunking and the batch-of-one path.
    for (chunk_index, chunk) in txs.chunks(333).enumerate() {
        for (i, scored) in scorer.score(chunk, &mut batch).unwrap().iter().enumerate() {
            let k = chunk_index * 333 + i;
            let diff = (f64::from(scored.score) - reference[k]).abs();
            if diff > worst.0 {
                worst = (diff, k);
            }
        }
    }
    let single = scorer.score(&txs[..1], &mut batch).unwrap();
    assert!((f64::from(single[0].score) - reference[0]).abs() <= 1e-5);
    assert!(worst.0 <= 1e-5, "row {} differs by {:e}", worst.1, worst.0);
    println!(
        "max |rust - pytorch f64| over 1000 golden rows: {:e}",
        worst.0
    );
}

#[test]
fn fused_op_matches_plain_candle_layers() {
    let scorer = Scorer::load(PACKAGE, &Device::Cpu).unwrap();
    let (txs, _) = golden();
    let batch = scorer.extractor().extract(&txs);
    let numeric =
        Tensor::from_slice(&batch.numeric, (batch.rows, batch.n_numeric), &Device::Cpu).unwrap();
    let categorical = Tensor::from_slice(
        &batch.categorical,
        (batch.rows, batch.n_categorical),
        &Device::Cpu,
    )
    .unwrap();
    let fused = scorer
        .model()
        .forward(&numeric, &categorical)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let plain = scorer
        .model()
        .forward_unfused(&numeric, &categorical)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let worst = fused
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-6, "fused and plain differ by {worst:e}");
}

#[test]
fn out_of_table_indices_are_an_error_not_a_panic() {
    let scorer = Scorer::load(PACKAGE, &Device::Cpu).unwrap();
    let (txs, _) = golden();
    let mut batch = scorer.extractor().extract(&txs[..2]);
    batch.categorical[3] = 10_000;
    let mut out = [0.0f32; 2];
    let err = scorer
        .model()
        .score_host(&batch.numeric, &batch.categorical, 2, &mut out)
        .unwrap_err();
    assert!(
        err.to_string().contains("outside its embedding table"),
        "{err}"
    );
}

/// A copy of the bundled package in a fresh temporary folder.
struct Copy(PathBuf);

impl Copy {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pixguard-pkg-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "MLmodel",
            "model.json",
            "model.safetensors",
            "reference.json",
        ] {
            std::fs::copy(Path::new(PACKAGE).join(name), dir.join(name)).unwrap();
        }
        Copy(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Rewrites a file and records its new digest in MLmodel, so only the deeper checks can object.
    fn rewrite(&self, name: &str, bytes: Vec<u8>) {
        let old = hex(&std::fs::read(self.path(name)).unwrap());
        std::fs::write(self.path(name), &bytes).unwrap();
        let mlmodel = std::fs::read_to_string(self.path("MLmodel")).unwrap();
        assert!(
            mlmodel.contains(&old),
            "MLmodel records the digest of {name}"
        );
        std::fs::write(self.path("MLmodel"), mlmodel.replace(&old, &hex(&bytes))).unwrap();
    }

    /// Rewrites the weights through `edit` (name → (shape, f32 values)).
    fn edit_tensors(&self, edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<f32>)>)) {
        let bytes = std::fs::read(self.path("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)> = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                (name, (view.shape().to_vec(), values))
            })
            .collect();
        edit(&mut tensors);
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|(n, (shape, v))| (n, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let views: Vec<(String, TensorView)> = raw
            .iter()
            .map(|(n, shape, data)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, shape.clone(), data).unwrap(),
                )
            })
            .collect();
        self.rewrite(
            "model.safetensors",
            safetensors::serialize(views, None).unwrap(),
        );
    }

    fn load(&self) -> Result<ModelPackage, PackageError> {
        ModelPackage::load(&self.0)
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn refused(copy: &Copy) -> String {
    copy.load()
        .expect_err("the damaged package must be refused")
        .to_string()
}

#[test]
fn the_bundled_package_is_valid_and_small() {
    let copy = Copy::new("ok");
    copy.load().expect("an untouched copy loads");
    let total: u64 = std::fs::read_dir(PACKAGE)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total < 5 * 1024 * 1024, "package is {total} bytes");
}

#[test]
fn one_flipped_byte_in_the_weights_is_refused() {
    let copy = Copy::new("flip");
    let mut bytes = std::fs::read(copy.path("model.safetensors")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(copy.path("model.safetensors"), bytes).unwrap();
    let err = refused(&copy);
    assert!(
        err.starts_with("model.safetensors: SHA-256 is") && err.contains("changed or corrupted"),
        "{err}"
    );
}

#[test]
fn a_changed_model_json_is_refused_by_digest() {
    let copy = Copy::new("json");
    let text = std::fs::read_to_string(copy.path("model.json")).unwrap();
    std::fs::write(
        copy.path("model.json"),
        text.replacen("\"hold\"", "\"hold\" ", 1),
    )
    .unwrap();
    assert!(refused(&copy).starts_with("model.json: SHA-256 is"));
}

#[test]
fn a_missing_tensor_is_named() {
    let copy = Copy::new("missing");
    copy.edit_tensors(|t| {
        t.remove("cross.1.bias");
    });
    assert_eq!(refused(&copy), "weights: tensor `cross.1.bias` is missing");
}

#[test]
fn a_wrong_shape_is_named() {
    let copy = Copy::new("shape");
    copy.edit_tensors(|t| {
        let (shape, values) = t.get_mut("mlp.0.bias").unwrap();
        shape[0] -= 1;
        values.pop();
    });
    assert_eq!(
        refused(&copy),
        "weights: tensor `mlp.0.bias` has shape [255], model.json implies [256]"
    );
}

#[test]
fn unexpected_tensors_and_non_finite_values_are_named() {
    let copy = Copy::new("extra");
    copy.edit_tensors(|t| {
        t.insert("cross.9.weight".into(), (vec![1], vec![0.0]));
    });
    assert_eq!(
        refused(&copy),
        "weights: unexpected tensor `cross.9.weight` (not part of this architecture)"
    );

    let copy = Copy::new("nan");
    copy.edit_tensors(|t| t.get_mut("head.weight").unwrap().1[5] = f32::NAN);
    assert_eq!(
        refused(&copy),
        "weights: tensor `head.weight` has a non-finite value at flat index 5"
    );
}

#[test]
fn unordered_thresholds_are_refused() {
    let copy = Copy::new("thresholds");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.path("model.json")).unwrap()).unwrap();
    let (hold, reject) = (
        config["thresholds"]["hold"].clone(),
        config["thresholds"]["reject"].clone(),
    );
    config["thresholds"]["hold"] = reject;
    config["thresholds"]["reject"] = hold;
    copy.rewrite("model.json", serde_json::to_vec_pretty(&config).unwrap());
    assert!(refused(&copy).starts_with("model.json thresholds: need 0 < hold < reject < 1"));
}

#[test]
fn flavor_paths_must_stay_inside_the_package() {
    let copy = Copy::new("path");
    let mlmodel = std::fs::read_to_string(copy.path("MLmodel")).unwrap();
    std::fs::write(
        copy.path("MLmodel"),
        mlmodel.replace(
            "weights: model.safetensors",
            "weights: ../model.safetensors",
        ),
    )
    .unwrap();
    assert_eq!(
        refused(&copy),
        "MLmodel flavors.pixguard.weights: `../model.safetensors` must be a file name inside the package"
    );
    std::fs::write(
        copy.path("MLmodel"),
        mlmodel.replace("  pixguard:", "  other:"),
    )
    .unwrap();
    assert!(refused(&copy).starts_with("MLmodel has no `pixguard` flavor"));
}
