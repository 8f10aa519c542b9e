"""The prompt-init variants of docs/recipe.md on `defects` (docs/recipe/init_variants.jsonl):

    python benchmarks/init_variants.py --how kmeans --data /tmp/holdout/defects/labels.csv --seeds 0,1,2 \
        --out docs/recipe/init_variants.jsonl        # and --how mean

It swaps PromptedViT.init_prompts_from_patches for a variant (kmeans: 20 Lloyd iterations; mean: the mean token
plus 2% noise) on top of the recipe "patches-probe-norm-adamw". It was written and run while the library init
still sampled single tokens; the library init is now k-means itself, so "kmeans" here reruns it with other
random starting tokens."""
import argparse, json, sys, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import recipe
from vptune.model.prompted_vit import PromptedViT

ORIGINAL = PromptedViT.init_prompts_from_patches

def variant(how):
    @torch.no_grad()
    def init(self, images, generator=None):
        ORIGINAL(self, images, generator)  # sampled tokens (also computes nothing else)
        if how == "sample":
            return
        p, last = self.prompt_config.num_tokens, self.prompt_blocks[-1]
        x = self._embed(images)
        for i, block in enumerate(self.backbone.blocks[:last + 1]):
            if i in self._prompt_index:
                toks = x[:, self.num_prefix_tokens:].flatten(0, 1)
                if how == "kmeans":
                    c = toks[torch.randperm(len(toks), generator=generator)[:p]].clone()
                    for _ in range(20):
                        a = torch.cdist(toks, c).argmin(1)
                        for k in range(p):
                            if (a == k).any():
                                c[k] = toks[a == k].mean(0)
                    self.prompts.tokens[self._prompt_index[i]] = c
                elif how == "mean":
                    noise = torch.empty(p, toks.shape[1]).uniform_(-1, 1, generator=generator) * 0.02 * toks.std()
                    self.prompts.tokens[self._prompt_index[i]] = toks.mean(0) + noise
            x = block(x)
        self.clear_cache()
    return init

p = argparse.ArgumentParser()
p.add_argument("--how"); p.add_argument("--data"); p.add_argument("--seeds", default="0"); p.add_argument("--out")
a = p.parse_args()
PromptedViT.init_prompts_from_patches = variant(a.how)
recipe.RECIPES[f"{a.how}-init"] = recipe.RECIPES["patches-probe-norm-adamw"]
for seed in map(int, a.seeds.split(",")):
    for data in a.data.split(","):
        row = recipe.run_one(f"{a.how}-init", data, seed, None)
        open(a.out, "a").write(json.dumps(row) + "\n")
        print(a.how, data.split("/")[-2] if "/" in data else data, seed, row["test_top1"], row["best_val_top1"], round(row["wall_seconds"]), flush=True)
