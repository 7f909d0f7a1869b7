import json, sys
import transformers.modeling_gguf_pytorch_utils as g
# Tokenizer-only load: tensors are not read (return_tensors=False), so torch is not needed.
g.is_torch_available = lambda: True
from transformers import AutoTokenizer
gguf = sys.argv[1]
import os
tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
strings = [
    "What color was Cotton?",
    "Once upon a time, in a barn near a farm house, there lived a little white kitten named Cotton.",
    "Q: Where did she live?\n\nA: in a barn\n\nQ:",
    "Numbers 12345 and 3.14159, dates 2026-11-23!",
    "  leading spaces,\ttabs\nand\r\nnewlines  ",
    "naïve café, Straße, 東京, emoji 🙂",
    "<|im_start|>user\nHello<|im_end|>",
    "don't won't it's they're I've we'll he'd",
]
out = [{"text": s, "ids": tok.encode(s, add_special_tokens=False)} for s in strings]
json.dump({"reference": "transformers %s AutoTokenizer.from_pretrained(gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf), add_special_tokens=False (torch check bypassed: metadata only)" % __import__("transformers").__version__, "cases": out}, open(sys.argv[2], "w"), indent=1, ensure_ascii=False)
print(out[0], out[-1])
