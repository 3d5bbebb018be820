package main

import (
	"fmt"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// charts writes <name>-qps.svg and <name>-p99.svg: the median QPS and p99 of
// each transport at one payload and concurrency.
func charts(all []sample, dir, name string, payload, conc int) error {
	med := map[string]sample{}
	for _, k := range kinds {
		var ss []sample
		for _, s := range all {
			if s.Kind == k && s.Payload == payload && s.Concurrency == conc {
				ss = append(ss, s)
			}
		}
		med[k], _ = median(ss)
	}
	for _, m := range []struct {
		file, title string
		value       func(sample) float64
	}{
		{"qps", "calls per second", func(s sample) float64 { return s.QPS }},
		{"p99", "p99 latency (µs)", func(s sample) float64 { return s.P99us }},
	} {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s, %s, %d concurrent callers (median)", m.title, bytesName(payload), conc)
		vals := make(plotter.Values, len(kinds))
		for i, k := range kinds {
			vals[i] = m.value(med[k])
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(36))
		if err != nil {
			return err
		}
		p.Add(bars)
		p.NominalX(kinds...)
		if err := p.Save(7*vg.Inch, 3.5*vg.Inch, filepath.Join(dir, name+"-"+m.file+".svg")); err != nil {
			return err
		}
	}
	return nil
}
