"""The peer in every GPU benchmark run: PyTorch (+ Hugging Face Transformers) on the same GPU, same shapes.

Kernels: bf16 `F.linear` and gpt-fast's int4 kernel (`torch.ops.aten._weight_int4pack_mm`, group 128) at the
Llama-2-7B linear shapes, for several batch sizes; the copy bandwidth of the card measured in the same run.
End to end (--e2e): Transformers eager decode of a randomly initialised Llama-2-7B (bf16) at several batch sizes.
Prints a table and writes JSON (--json FILE). Timing: CUDA events, warm-up, median; weights rotated over several
copies so that the working set exceeds L2 and the numbers measure device memory.
"""
import argparse, json, statistics, time

import torch
import torch.nn.functional as F

SHAPES = [("qkvo 4096x4096", 4096, 4096), ("gate/up 22016x4096", 22016, 4096), ("down 4096x11008", 4096, 11008)]
BATCHES = [1, 4, 16, 64, 128]
GROUP = 128


def timed(fn, iters=100, warmup=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)  # us
    return statistics.median(times)


def copy_bandwidth():
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    us = timed(lambda: dst.copy_(src), iters=20, warmup=3)
    return 2 * n / (us * 1e-6) / 1e9  # GB/s, read + write


def copies_for(nbytes, l2=60 << 20):
    return max(2, -(-4 * l2 // nbytes))


def kernels(bw):
    rows = []
    for name, n, k in SHAPES:
        wb = n * k * 2
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies_for(wb))]
        i4 = None
        try:
            packs = []
            for _ in range(copies_for(n * k // 2)):
                q = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device="cuda")
                packs.append(torch.ops.aten._convert_weight_to_int4pack(q, 8))
            sz = (torch.rand(k // GROUP, n, 2, device="cuda", dtype=torch.bfloat16) * 0.01).contiguous()
            i4 = (packs, sz)
        except Exception as e:  # report, don't hide
            print("int4 pack failed:", repr(e))
        for m in BATCHES:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            it = {"i": 0}

            def bf16():
                it["i"] = (it["i"] + 1) % len(ws)
                F.linear(x, ws[it["i"]])

            t_bf16 = timed(bf16)
            row = {"shape": name, "n": n, "k": k, "m": m, "bf16_us": t_bf16,
                   "bf16_floor_frac": (wb + m * k * 2 + m * n * 2) / (t_bf16 * 1e-6) / 1e9 / bw}
            if i4:
                packs, sz = i4

                def int4():
                    it["i"] = (it["i"] + 1) % len(packs)
                    torch.ops.aten._weight_int4pack_mm(x, packs[it["i"]], GROUP, sz)

                t_i4 = timed(int4)
                i4b = n * k // 2 + sz.numel() * 2
                row.update({"int4_us": t_i4, "int4_floor_frac": (i4b + m * k * 2 + m * n * 2) / (t_i4 * 1e-6) / 1e9 / bw})
            rows.append(row)
        del ws, i4
        torch.cuda.empty_cache()
    return rows


def e2e(batches, steps=32, prompt=128):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    out = []
    for b in batches:
        ids = torch.randint(3, 32000, (b, prompt), device="cuda")
        with torch.no_grad():
            model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
            torch.cuda.synchronize(); t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
            torch.cuda.synchronize(); dt = time.perf_counter() - t0
        out.append({"batch": b, "tokens_per_s_per_seq": steps / dt, "tokens_per_s_total": b * steps / dt,
                    "note": "includes the prefill of a 128-token prompt"})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--e2e", action="store_true")
    ap.add_argument("--copy-only", action="store_true", help="only the copy bandwidth (the floors' denominator)")
    args = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    bw = copy_bandwidth()
    res = {"card": props.name, "torch": torch.__version__, "copy_GBps": bw}
    if not args.copy_only:
        res["kernels"] = kernels(bw)
    if args.e2e:
        res["e2e_transformers_bf16_llama2_7b"] = e2e([1, 8, 32, 128])
    print(f"card {props.name}, copy bandwidth {bw:.0f} GB/s (read + write)")
    print(f"{'shape':22} {'m':>4} {'bf16 us':>9} {'floor':>6} {'int4 us':>9} {'floor':>6}")
    for r in res.get("kernels", []):
        print(f"{r['shape']:22} {r['m']:>4} {r['bf16_us']:>9.1f} {r['bf16_floor_frac']:>6.0%} "
              f"{r.get('int4_us', float('nan')):>9.1f} {r.get('int4_floor_frac', float('nan')):>6.0%}")
    for r in res.get("e2e_transformers_bf16_llama2_7b", []):
        print(f"transformers bf16 7B batch {r['batch']}: {r['tokens_per_s_per_seq']:.1f} tok/s/seq")
    if args.json:
        json.dump(res, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
