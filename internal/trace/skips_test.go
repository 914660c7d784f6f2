package trace

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSkipReportSkips checks where the rows of testdata/skips are reported
// and how much of the trace they hold: rows 2..10 of invocations.csv hold
// 22 readable invocations; only f1's first row (3) survives.
func TestSkipReportSkips(t *testing.T) {
	tr, err := LoadAzure2019("testdata/skips")
	if err != nil {
		t.Fatal(err)
	}
	r := tr.Report
	if r.Rows != 9 || r.AffectedRows != 8 || r.Invocations != 22 || r.AffectedInvocations != 19 {
		t.Errorf("report rows %d affected %d, invocations %d affected %d; want 9, 8, 22, 19",
			r.Rows, r.AffectedRows, r.Invocations, r.AffectedInvocations)
	}
	want := []string{
		"invocations.csv line 3: 5 fields, header has 6",
		`invocations.csv line 4: minute 1: count "x" is not a non-negative integer`,
		"invocations.csv line 5: empty HashFunction or HashApp",
		`invocations.csv line 6: minute 1: count "" is not a non-negative integer`,
		`invocations.csv line 10: minute 1: count "-1" is not a non-negative integer`,
		"invocations.csv line 7: function f1 already on line 2",
		"durations.csv line 6: percentiles decrease",
		`durations.csv line 7: Minimum "" is not a non-negative number`,
		"durations.csv line 8: 4 fields, header has 11",
		"durations.csv line 5: function f1 has an earlier row",
		"durations.csv line 4: function f9 is not in invocations.csv",
		`memory.csv line 4: AverageAllocatedMb "big" is not a non-negative number`,
		"memory.csv line 5: function f11 is not in invocations.csv",
		"invocations.csv line 8: function f5 has no usable row in durations.csv",
		"invocations.csv line 9: function f6 has no usable row in memory.csv",
	}
	var got []string
	for _, e := range r.Examples {
		got = append(got, e.String())
	}
	for _, w := range want {
		if !contains(got, w) {
			t.Errorf("report lacks %q; has:\n%s", w, strings.Join(got, "\n"))
		}
	}
	var b bytes.Buffer
	WriteSkips(&b, tr.Skipped, &tr.Report)
	for _, w := range []string{"skipped 15 rows", "8 of 9 invocation rows", "19 of 22 invocations (86.36%)", "  bad-invocations: 5\n", "    invocations.csv line 3:"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("WriteSkips lacks %q:\n%s", w, b.String())
		}
	}
	if err := CheckSkips(tr.Skipped, &tr.Report, 0.01); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "88.89%") {
		t.Errorf("CheckSkips = %v, want ErrDamaged naming 88.89%% (8 of 9 rows)", err)
	}
	if err := CheckSkips(tr.Skipped, &tr.Report, 1); err != nil {
		t.Errorf("CheckSkips with 100%% allowed = %v", err)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// writeTrace writes a 2019 trace with the given invocations.csv body (after
// the header); every function f<N> gets durations and 100 MB.
func writeTrace(t *testing.T, inv string, funcs int) string {
	t.Helper()
	dir := t.TempDir()
	dur := "HashFunction,Average,Minimum,Maximum,percentile_Average_0,percentile_Average_1,percentile_Average_25," +
		"percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100\n"
	mem := "HashFunction,AverageAllocatedMb\n"
	for i := range funcs {
		f := "f" + string(rune('0'+i))
		dur += f + ",1,1,1,1,1,1,1,1,1,1\n"
		mem += f + ",100\n"
	}
	for name, body := range map[string]string{
		"invocations.csv": "HashOwner,HashApp,HashFunction,Trigger,1,2,3\n" + inv,
		"durations.csv":   dur, "memory.csv": mem,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestSkipReportDamage covers the three ways the issue found a damaged
// trace simulated without a word, and a clean file for contrast.
func TestSkipReportDamage(t *testing.T) {
	const clean = "o,a,f0,http,10,10,10\no,a,f1,http,1,1,1\no,a,f2,http,30,30,30\n"
	tests := []struct {
		name                   string
		inv                    string
		funcs                  int   // functions loaded
		total                  int64 // their invocations
		affected, affectedRows int64
		counts                 SkipCounts
		example                string
		damaged                bool // above 1 %
	}{
		{"clean", clean, 3, 123, 0, 0, SkipCounts{}, "", false},
		// Cut inside the last row: it has too few fields and is skipped; its
		// readable cells (30, 3) are what is lost. Its durations and memory
		// rows then match nothing.
		{"truncated mid-row", clean[:len(clean)-5], 2, 33, 33, 1, SkipCounts{BadInvocations: 1, Unmatched: 2},
			"invocations.csv line 4: 6 fields, header has 7 (last line, no final newline)", true},
		// Cut inside the last field: 30 reads as 3. The row is kept and
		// flagged, all of it counted as affected.
		{"truncated in last field", clean[:len(clean)-2], 3, 96, 63, 1, SkipCounts{NoFinalNewline: 1},
			"invocations.csv line 4: " + unterminated, true},
		// A -1 in the busiest row skips the row, and with it 60 of 93
		// readable invocations.
		{"negative count", "o,a,f0,http,10,10,10\no,a,f1,http,1,1,1\no,a,f2,http,30,-1,30\n", 2, 33, 60, 1, SkipCounts{BadInvocations: 1, Unmatched: 2},
			`invocations.csv line 4: minute 2: count "-1" is not a non-negative integer`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := LoadAzure2019(writeTrace(t, tc.inv, 3))
			if err != nil {
				t.Fatal(err)
			}
			if len(tr.Functions) != tc.funcs || tr.Invocations() != tc.total {
				t.Errorf("%d functions, %d invocations; want %d, %d", len(tr.Functions), tr.Invocations(), tc.funcs, tc.total)
			}
			if tr.Skipped != tc.counts {
				t.Errorf("skipped %+v, want %+v", tr.Skipped, tc.counts)
			}
			r := tr.Report
			if r.AffectedInvocations != tc.affected || int64(r.AffectedRows) != tc.affectedRows || r.Rows != 3 {
				t.Errorf("affected %d invocations in %d of %d rows; want %d in %d of 3", r.AffectedInvocations, r.AffectedRows, r.Rows, tc.affected, tc.affectedRows)
			}
			if tc.example != "" && (len(r.Examples) == 0 || r.Examples[0].String() != tc.example) {
				t.Errorf("examples %v, want %s first", r.Examples, tc.example)
			}
			err = CheckSkips(tr.Skipped, &tr.Report, 0.01)
			if got := errors.Is(err, ErrDamaged); got != tc.damaged {
				t.Errorf("CheckSkips = %v, want damaged %v", err, tc.damaged)
			}
		})
	}
}

// TestSkipReportSuspectJoins flags a function whose durations or memory row
// is the unterminated last line of its file: a memory of 1536 cut to 15
// would size it wrongly.
func TestSkipReportSuspectJoins(t *testing.T) {
	for _, name := range []string{"durations.csv", "memory.csv"} {
		t.Run(name, func(t *testing.T) {
			dir := writeTrace(t, "o,a,f0,http,1,1,1\no,a,f1,http,5,5,5\n", 2)
			p := filepath.Join(dir, name)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, bytes.TrimSuffix(b, []byte("\n")), 0o644); err != nil {
				t.Fatal(err)
			}
			tr, err := LoadAzure2019(dir)
			if err != nil {
				t.Fatal(err)
			}
			r := tr.Report
			if len(tr.Functions) != 2 || tr.Skipped != (SkipCounts{NoFinalNewline: 1}) || r.AffectedRows != 1 || r.AffectedInvocations != 15 {
				t.Errorf("%d functions, skipped %+v, affected %d rows %d invocations; want 2, 1 suspect, 1 row, 15",
					len(tr.Functions), tr.Skipped, r.AffectedRows, r.AffectedInvocations)
			}
			if len(r.Examples) != 1 || r.Examples[0].File != name || r.Examples[0].Line != 3 {
				t.Errorf("examples %v, want %s line 3", r.Examples, name)
			}
		})
	}
}

// TestSkipReportExamplesCapped lists only the first MaxSkipExamples rows of
// a reason but counts them all.
func TestSkipReportExamplesCapped(t *testing.T) {
	inv := "o,a,f0,http,1,1,1\n" + strings.Repeat("o,a,,http,1,1,1\n", 8)
	tr, err := LoadAzure2019(writeTrace(t, inv, 1))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Skipped.BadInvocations != 8 || len(tr.Report.Examples) != MaxSkipExamples || tr.Report.Examples[4].Line != 7 {
		t.Errorf("%d bad rows, examples %v; want 8 and lines 3..7", tr.Skipped.BadInvocations, tr.Report.Examples)
	}
	var b bytes.Buffer
	WriteSkips(&b, tr.Skipped, &tr.Report)
	if !strings.Contains(b.String(), "bad-invocations: 8 (first 5 below)") {
		t.Errorf("WriteSkips:\n%s", b.String())
	}
}

// TestSkipReport2021 flags the last row of the real 2021 excerpt, which has
// no final newline, and keeps it.
func TestSkipReport2021(t *testing.T) {
	tr, err := LoadAzure2021(filepath.Join(dataDir, "azure2021", "Azure2021_200.csv"))
	if err != nil {
		t.Fatal(err)
	}
	r := tr.Report
	if tr.Invocations() != 199 || tr.Skipped != (SkipCounts{NoFinalNewline: 1}) || r.Rows != 199 || r.AffectedRows != 1 {
		t.Errorf("%d calls, skipped %+v, %d of %d rows affected; want 199, 1 suspect, 1 of 199", tr.Invocations(), tr.Skipped, r.AffectedRows, r.Rows)
	}
	if len(r.Examples) != 1 || r.Examples[0].Line != 200 {
		t.Errorf("examples %v, want line 200", r.Examples)
	}
	if err := CheckSkips(tr.Skipped, &tr.Report, 0.01); err != nil {
		t.Errorf("one suspect row in 199 is within 1%%: %v", err)
	}

	dir := t.TempDir()
	p := filepath.Join(dir, "t.csv")
	body := "app,func,end_timestamp,duration\na,f,10,1\na,f,x,1\na,g,20,-2\na,g,30,2\n"
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	tr, err = LoadAzure2021(p)
	if err != nil {
		t.Fatal(err)
	}
	r = tr.Report
	if tr.Skipped != (SkipCounts{BadInvocations: 2}) || r.Rows != 4 || r.AffectedRows != 2 || len(r.Examples) != 2 ||
		r.Examples[0].String() != `t.csv line 3: end_timestamp "x" is not a non-negative number` ||
		r.Examples[1].String() != `t.csv line 4: duration "-2" is not a non-negative number` {
		t.Errorf("skipped %+v, report %+v", tr.Skipped, r)
	}
}
