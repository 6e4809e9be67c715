//! Times `collide::suffix` on 10M clustered code tuples, five times in one process.
use std::time::Instant;
fn main() {
    let n = 10_000_000usize;
    let mut x: u64 = 1;
    let codes: Vec<u16> = (0..n)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = (x % 3000) * (x % 3000) % (1 << 24);
            [(r >> 16) as u16, ((r >> 8) & 255) as u16, (r & 255) as u16]
        })
        .collect();
    for _ in 0..5 {
        let t = Instant::now();
        match sidkit_core::collide::suffix(&codes, &[256, 256, 256], None, None, Some(1 << 16)) {
            Ok((out, g)) => println!(
                "suffix {:?}: {} groups, {} values",
                t.elapsed(),
                g.groups,
                out.len()
            ),
            Err(e) => println!("{e}"),
        }
    }
}
