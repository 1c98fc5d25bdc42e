//! Throughput of the pipeline's pure stages on COPY-like text: chunk
//! encoding (zstd + CRC32 of raw and stored bytes) at the levels users pick,
//! and decoding with all checks. `cargo bench --bench pipeline`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgtide::chunk::codec::{count_newlines, decode, encode};
use pgtide::chunk::Compression;

/// 4 MiB of pgbench_accounts-like rows: `aid\tbid\tabalance\tfiller`.
fn copy_text(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 128);
    let mut i: u64 = 1;
    while out.len() < bytes {
        let filler = format!(
            "{:<84}",
            format!("note {}", i.wrapping_mul(2654435761) % 9973)
        );
        out.extend_from_slice(
            format!(
                "{i}\t{}\t{}\t{filler}\n",
                i / 100_000 + 1,
                (i * 7919) % 10_000
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(bytes);
    out
}

fn bench(c: &mut Criterion) {
    let raw = copy_text(4 << 20);
    assert_eq!(
        count_newlines(&raw),
        raw.iter().filter(|&&b| b == b'\n').count() as u64
    );
    // The stored size at each level, for the compression ratio.
    for comp in [
        Compression::Zstd(1),
        Compression::Zstd(3),
        Compression::Zstd(9),
    ] {
        let e = encode(&raw, comp).unwrap();
        eprintln!(
            "{comp}: {} raw bytes stored in {} ({:.1}:1)",
            raw.len(),
            e.data.len(),
            raw.len() as f64 / e.data.len() as f64
        );
    }
    let mut g = c.benchmark_group("encode_4MiB_chunk");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.sample_size(20);
    for comp in [
        Compression::None,
        Compression::Zstd(1),
        Compression::Zstd(3),
        Compression::Zstd(9),
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(comp), &comp, |b, &comp| {
            b.iter(|| encode(&raw, comp).unwrap())
        });
    }
    g.finish();

    // What `encode` spends besides zstd: the CRC32 of the raw bytes and the
    // row count (`\n` bytes), measured apart, plus a chunked count that the
    // compiler vectorises, to show what the row count could cost.
    let mut g = c.benchmark_group("encode_parts_4MiB");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.sample_size(20);
    g.bench_function("crc32", |b| b.iter(|| crc32fast::hash(black_box(&raw))));
    g.bench_function("newlines_iter_filter", |b| {
        b.iter(|| black_box(&raw).iter().filter(|&&b| b == b'\n').count() as u64)
    });
    g.bench_function("newlines_chunked", |b| {
        b.iter(|| count_newlines(black_box(&raw)))
    });
    g.finish();

    // What an encrypted repository adds per chunk: AES-256-GCM sealing of
    // the stored frame (after zstd, so of fewer bytes than the raw chunk),
    // its CRC32, and opening on the way back. Throughput is of raw bytes,
    // to compare with encode.
    let key = pgtide::crypt::DataKey::generate().unwrap();
    let cipher = pgtide::crypt::ChunkCipher::new(&key, "20261206-000000D");
    let mut g = c.benchmark_group("seal_4MiB_chunk");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.sample_size(20);
    for comp in [Compression::None, Compression::Zstd(3)] {
        let e = encode(&raw, comp).unwrap();
        g.bench_with_input(BenchmarkId::new("seal", comp), &e, |b, e| {
            b.iter(|| {
                let s = cipher.seal(1, e.raw_len, black_box(&e.data));
                crc32fast::hash(&s)
            })
        });
        let sealed = cipher.seal(1, e.raw_len, &e.data);
        g.bench_with_input(BenchmarkId::new("open", comp), &sealed, |b, s| {
            b.iter(|| cipher.open(1, e.raw_len, black_box(s)).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("decode_4MiB_chunk");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.sample_size(20);
    for comp in [
        Compression::None,
        Compression::Zstd(1),
        Compression::Zstd(3),
    ] {
        let e = encode(&raw, comp).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(comp), &comp, |b, &comp| {
            b.iter(|| {
                decode(
                    &e.data,
                    e.data.len() as u64,
                    e.crc_stored,
                    e.raw_len,
                    e.crc_raw,
                    comp,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
