"""Generalization measures of finished trials (paper Table 3; science.md "Generalization measures").

fold.py       the plain network a trial computes: dequantized weights, BN folded into the convs
perturb.py    batched evaluation of many perturbed copies of one network (torch.func + vmap)
search.py     the bisections for sigma, sigma' (PAC-Bayes) and alpha, alpha' (sharpness)
bounds.py     the bound formulas and their sqrt(x / m) normalisation
kendall.py    granulated Kendall coefficient (Jiang et al. 2019)
schema.py     the Parquet columns of measures/bits=B/<id>.parquet
run.py        measure one stored trial end to end
report.py     Table 3 and the Kendall table for `qgen-sweep report`
"""
