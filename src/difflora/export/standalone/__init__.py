"""The configuration and modeling files `difflora export` copies beside the exported weights.

They import only torch and transformers (never difflora or peft): the exported folder loads with
AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True) anywhere transformers runs.
"""
