//! Helpers shared by the integration tests: generated lists and filters only, never a
//! real list.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use hashgate_guest::{Algorithm, BuildParams, FilterBuilder, SectionSpec};
use hashgate_host::trust::SecretKey;
use hashgate_host::{Limits, Runtime};
use rand::{Rng, SeedableRng};

/// A fixed test key (seed 7, 7, ...).
pub fn test_key() -> SecretKey {
    SecretKey::from_seed(&[7u8; 32])
}

/// One runtime per test binary: compiling the component is the slow part.
pub fn runtime() -> Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    RT.get_or_init(|| Arc::new(Runtime::new(Limits::default()).expect("runtime")))
        .clone()
}

/// `n` random digests of `algorithm`, reproducible from `seed`.
pub fn random_digests(algorithm: Algorithm, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut d = vec![0u8; algorithm.digest_len()];
            rng.fill(&mut d[..]);
            d
        })
        .collect()
}

/// One list entry: algorithm, category, digest.
pub type Entry = (Algorithm, Option<&'static str>, Vec<u8>);

/// A snapshot body holding `entries`.
pub fn build_body(entries: &[Entry], fp_rate: f64) -> Vec<u8> {
    let params = BuildParams::new("test-series", 3, 1_700_000_000, 4_000_000_000, fp_rate);
    let mut specs: Vec<SectionSpec> = Vec::new();
    for (algorithm, category, _) in entries {
        specs.push(SectionSpec {
            algorithm: *algorithm,
            category: category.map(str::to_string),
            entries: 1,
        });
    }
    let mut builder = FilterBuilder::new(&params, &specs).expect("builder");
    for (algorithm, category, digest) in entries {
        builder
            .insert(*algorithm, *category, digest)
            .expect("insert");
    }
    builder.finish().expect("finish")
}

/// `body` with a signature trailer by `key`.
pub fn sign(body: &[u8], key: &SecretKey) -> Vec<u8> {
    let mut file = body.to_vec();
    key.sign_append(&mut file);
    file
}

/// Converts a guest algorithm into the host's (generated) one.
pub fn host_algorithm(a: Algorithm) -> hashgate_host::Algorithm {
    match a {
        Algorithm::Md5 => hashgate_host::Algorithm::Md5,
        Algorithm::Sha1 => hashgate_host::Algorithm::Sha1,
        Algorithm::Sha256 => hashgate_host::Algorithm::Sha256,
    }
}

/// A host digest.
pub fn host_digest(a: Algorithm, bytes: &[u8]) -> hashgate_host::Digest {
    hashgate_host::Digest {
        algorithm: host_algorithm(a),
        bytes: bytes.to_vec(),
    }
}
pub mod postgres;
pub mod procs;
pub mod s3;
pub mod squid;

/// A component importing one function, made with wasm-encoder.
pub fn component_with_an_import() -> Vec<u8> {
    use wasm_encoder::{
        Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, PrimitiveValType,
    };
    let mut types = ComponentTypeSection::new();
    types
        .function()
        .params([] as [(&str, PrimitiveValType); 0])
        .result(Some(PrimitiveValType::U64.into()));
    let mut imports = ComponentImportSection::new();
    imports.import("wall-clock-now", ComponentTypeRef::Func(0));
    let mut component = Component::new();
    component.section(&types);
    component.section(&imports);
    component.finish()
}

/// A valid PNG header of `w` x `h` 8-bit grey pixels, and one tiny zlib stream of zeros:
/// what a bomb looks like before it is inflated.
pub fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc_input = kind.to_vec();
        crc_input.extend(data);
        out.extend(kind);
        out.extend(data);
        out.extend(crc32(&crc_input).to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &vec![0u8; 1 << 20]).unwrap();
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
