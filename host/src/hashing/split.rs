//! One large object, several algorithms, several cores: the bytes are read once into
//! shared buffers and each group of algorithms hashes them on a thread of its own, so
//! that the object takes as long as its slowest algorithm (MD5), not the sum of all.
//!
//! ```
//! use hashgate_host::hashing::{split, ObjectHasher};
//! use hashgate_host::Algorithm;
//!
//! let data = vec![7u8; 3 << 20];
//! let (digests, len) = split::hash_reader(&mut data.as_slice(), &Algorithm::ALL, 2).unwrap();
//! let mut alone = ObjectHasher::new(&Algorithm::ALL);
//! alone.update(&data);
//! assert_eq!((digests, len), (alone.finish(), data.len() as u64));
//! ```

use std::io::{self, Read};
use std::sync::mpsc;
use std::sync::Arc;

use super::ObjectHasher;
use crate::{Algorithm, Digest};

/// Bytes read at a time.
const CHUNK: usize = 1 << 20;
/// Buffers in flight: the reader fills one while the threads hash the others.
const BUFFERS: usize = 4;

/// What one byte costs each algorithm here, one stream at a time (`lanes/one-md5` and
/// `lanes/crate-*`: MD5 ~700 MiB/s, SHA-1 and SHA-256 on SHA-NI ~1.4 GiB/s), to balance
/// the threads.
fn cost(algorithm: Algorithm) -> u32 {
    match algorithm {
        Algorithm::Md5 => 2,
        _ => 1,
    }
}

/// `algorithms` split into at most `threads` groups of about equal cost (the costliest
/// first, each to the group with the least so far), in [`Algorithm::ALL`] order within
/// each group.
///
/// ```
/// use hashgate_host::hashing::split::groups;
/// use hashgate_host::Algorithm::*;
///
/// assert_eq!(groups(&[Sha256, Sha1, Md5], 2), vec![vec![Md5], vec![Sha1, Sha256]]);
/// assert_eq!(groups(&[Sha256, Md5], 1), vec![vec![Md5, Sha256]]);
/// ```
pub fn groups(algorithms: &[Algorithm], threads: usize) -> Vec<Vec<Algorithm>> {
    let rank = |a: &Algorithm| Algorithm::ALL.iter().position(|x| x == a);
    let mut sorted = algorithms.to_vec();
    sorted.sort_by_key(|a| (std::cmp::Reverse(cost(*a)), rank(a)));
    let mut groups: Vec<(u32, Vec<Algorithm>)> =
        vec![(0, Vec::new()); threads.clamp(1, sorted.len().max(1))];
    for a in sorted {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(c, _)| *c) {
            lightest.0 += cost(a);
            lightest.1.push(a);
        }
    }
    groups
        .into_iter()
        .map(|(_, mut g)| {
            g.sort_by_key(rank);
            g
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// Hashes everything `reader` gives with `algorithms` on up to `threads` threads (one
/// per group of [`groups`]); returns the digests in [`ObjectHasher::finish`]'s order
/// and the bytes read. With one group it hashes on the calling thread.
pub fn hash_reader(
    reader: &mut dyn Read,
    algorithms: &[Algorithm],
    threads: usize,
) -> io::Result<(Vec<Digest>, u64)> {
    let groups = groups(algorithms, threads);
    if groups.len() <= 1 {
        let mut hasher = ObjectHasher::new(algorithms);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read_full(reader, &mut buf)?;
            hasher.update(&buf[..n]);
            if n < buf.len() {
                let len = hasher.len();
                return Ok((hasher.finish(), len));
            }
        }
    }
    std::thread::scope(|s| {
        let (back_tx, back_rx) = mpsc::channel::<Arc<Vec<u8>>>();
        let mut senders = Vec::with_capacity(groups.len());
        let mut threads = Vec::with_capacity(groups.len());
        for group in &groups {
            let (tx, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(BUFFERS);
            let back = back_tx.clone();
            senders.push(tx);
            threads.push(s.spawn(move || {
                let mut hasher = ObjectHasher::new(group);
                for chunk in rx {
                    hasher.update(&chunk);
                    // The reader reuses a buffer once every thread has sent it back.
                    let _ = back.send(chunk);
                }
                hasher.finish()
            }));
        }
        drop(back_tx);
        let mut free: Vec<Vec<u8>> = Vec::new();
        let mut allocated = 0;
        let mut len = 0u64;
        let read = loop {
            let mut buf = match free.pop() {
                Some(b) => b,
                None if allocated < BUFFERS => {
                    allocated += 1;
                    vec![0u8; CHUNK]
                }
                None => match back_rx.recv() {
                    Ok(chunk) => {
                        if let Some(b) = Arc::into_inner(chunk) {
                            free.push(b);
                        }
                        continue;
                    }
                    // Every thread is gone: one panicked (reported below).
                    Err(_) => break Ok(()),
                },
            };
            buf.resize(CHUNK, 0);
            let n = match read_full(reader, &mut buf) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            buf.truncate(n);
            len += n as u64;
            let chunk = Arc::new(buf);
            if senders.iter().any(|tx| tx.send(chunk.clone()).is_err()) {
                break Ok(());
            }
            if n < CHUNK {
                break Ok(());
            }
        };
        drop(senders);
        let mut digests = Vec::with_capacity(3);
        for t in threads {
            digests.extend(
                t.join()
                    .map_err(|_| io::Error::other("a hashing thread panicked"))?,
            );
        }
        read?;
        digests.sort_by_key(|d| Algorithm::ALL.iter().position(|a| *a == d.algorithm));
        Ok((digests, len))
    })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that fails after `ok` bytes.
    struct Failing {
        ok: usize,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::other("disk gone"));
            }
            let n = buf.len().min(self.ok);
            buf[..n].fill(1);
            self.ok -= n;
            Ok(n)
        }
    }

    #[test]
    fn every_size_around_the_chunks_gives_the_digests_of_one_stream() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, BUFFERS * CHUNK * 2 + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            for threads in [1, 2, 3] {
                let (digests, n) =
                    hash_reader(&mut data.as_slice(), &Algorithm::ALL, threads).unwrap();
                let mut alone = ObjectHasher::new(&Algorithm::ALL);
                alone.update(&data);
                assert_eq!(n, len as u64);
                assert_eq!(digests, alone.finish(), "{len} bytes on {threads} threads");
            }
        }
    }

    #[test]
    fn a_read_error_is_an_error_not_a_digest() {
        for threads in [1, 2] {
            let err = hash_reader(&mut Failing { ok: 3 * CHUNK + 7 }, &Algorithm::ALL, threads)
                .unwrap_err();
            assert_eq!(err.to_string(), "disk gone");
        }
    }
}
