# Reference tail probabilities for feidan's statistics tests.
# Exact sums in 50-digit arithmetic (mpmath), so the table is the truth and not
# another floating-point implementation: scipy 1.17's betabinom.sf, for one,
# is off by 6e-4 relative at (70, 200, 20, 180).
# Regenerate: python3 tests/data/reference_tails.py > tests/data/reference_tails.csv
import mpmath as m
m.mp.dps = 50

def binom_pmf(k, n, p):
    return m.binomial(n, k) * m.mpf(p) ** k * (1 - m.mpf(p)) ** (n - k)

def betabinom_pmf(k, n, a, b):
    return m.binomial(n, k) * m.beta(k + m.mpf(a), n - k + m.mpf(b)) / m.beta(m.mpf(a), m.mpf(b))

class st:
    class binom:
        cdf = staticmethod(lambda k, n, p: sum(binom_pmf(i, n, p) for i in range(0, k + 1)))
        sf = staticmethod(lambda k, n, p: sum(binom_pmf(i, n, p) for i in range(k + 1, n + 1)))
    class betabinom:
        cdf = staticmethod(lambda k, n, a, b: sum(betabinom_pmf(i, n, a, b) for i in range(0, k + 1)))
        sf = staticmethod(lambda k, n, a, b: sum(betabinom_pmf(i, n, a, b) for i in range(k + 1, n + 1)))
rows = []
for k, n, p in [(3,30,0.47),(0,10,0.5),(5,10,0.5),(10,100,0.3),(1,50,0.4),(20,40,0.5),(0,200,0.05),(2,200,0.05),(45,60,0.9),(7,7,0.2),(12,80,0.35),(1,3,0.9),(30,100,0.45),(60,150,0.5)]:
    rows.append(("binomial_lower", k, n, p, "", st.binom.cdf(k, n, p)))
for k, n, p in [(3,30,0.02),(10,10,0.5),(15,100,0.05),(40,50,0.5),(1,5,0.1),(9,20,0.1),(100,300,0.2),(6,6,0.3)]:
    rows.append(("binomial_upper", k, n, p, "", st.binom.sf(k - 1, n, p)))
# Larger books and windows, both sides of the mode, and near-certain tails.
for k, n, p in [(50,2000,0.05),(100,2000,0.05),(130,2000,0.05),(0,1500,0.001),(700,1200,0.6),(9,10,0.999)]:
    rows.append(("binomial_lower", k, n, p, "", st.binom.cdf(k, n, p)))
for k, n, p in [(150,2000,0.05),(95,2000,0.05),(2,1500,0.001),(1,1,0.5),(1000,1200,0.8),(10,10,0.001)]:
    rows.append(("binomial_upper", k, n, p, "", st.binom.sf(k - 1, n, p)))
for k, n, a, b in [(3,30,14.1,15.9),(0,10,2,2),(5,40,20,20),(2,25,50.5,30.2),(10,100,3.3,4.4),(1,12,9,1),(30,60,120,80),(0,50,7.5,2.5),(4,4,1,1),(6,90,60,40)]:
    rows.append(("betabinom_lower", k, n, a, b, st.betabinom.cdf(k, n, a, b)))
for k, n, a, b in [(8,10,2,8),(20,40,5,15),(3,5,1,1),(50,100,10,40),(12,30,2.5,22.5),(9,9,3,3),(25,60,4,36),(70,200,20,180)]:
    rows.append(("betabinom_upper", k, n, a, b, st.betabinom.sf(k - 1, n, a, b)))
# gamma_survival: columns k=t (as x), n=shape, p_or_a=scale; chi2_upper: k=x, n=df.
for t, shape, scale in [(30.0, 4.0, 5.0), (60.5, 4.0, 5.0), (10.0, 1.0, 10.0), (100.0, 2.5, 7.3), (3.0, 10.0, 1.5), (45.25, 6.2, 2.1)]:
    rows.append(("gamma_survival", t, shape, scale, "", m.gammainc(m.mpf(shape), m.mpf(t) / m.mpf(scale), m.inf, regularized=True)))
for x, df in [(10.0, 4), (32.2, 6), (3.0, 2), (50.0, 8), (0.5, 2), (80.1, 10)]:
    rows.append(("chi2_upper", x, df, "", "", m.gammainc(m.mpf(df) / 2, m.mpf(x) / 2, m.inf, regularized=True)))
# student_t_lower: k=t, n=df.
def t_lower(t, df):
    tail = m.betainc(m.mpf(df) / 2, m.mpf(1) / 2, 0, m.mpf(df) / (m.mpf(df) + m.mpf(t) ** 2), regularized=True) / 2
    return tail if t < 0 else 1 - tail
for t, df in [(-3.9, 9), (-2.0, 4), (-0.5, 29), (1.5, 12), (-6.0, 3), (0.0, 7), (-2.5, 2.5)]:
    rows.append(("student_t_lower", t, df, "", "", t_lower(t, df)))
print("test,k,n,p_or_a,b,value")
for r in rows:
    r = r[:5] + (float(r[5]),)
    print(",".join(str(x) if not isinstance(x, float) else repr(x) for x in r))
