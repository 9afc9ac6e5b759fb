// virsim's extension to Renode, compiled by Renode itself when the adapter includes it
// (`include @VirsimRenode.cs`; virsim/backends/renode/adapter.py). virsim's own code, no Renode code:
//
// - Probes: coverage and traces from the hook Renode's own execution tracer uses (the CPU's
//   block-finished hook), counted inside Renode, so nothing per instruction crosses a process
//   boundary or lands in a file: `sysbus.cpu VirsimCoverage "start"`, `sysbus.cpu VirsimTrace ...`.
// - SharedMemory: a memory region backed by a file every node of a multi-node board maps
//   (virsim.sync.system), so a Renode node shares memory with built-in and QEMU nodes.
// - Lockstep: the Renode side of virsim's lockstep barrier (virsim/sync/lockstep.py): at every
//   synchronisation point of the emulation (its quantum is the barrier's) the Renode nodes
//   publish their cross-node events and meet the other nodes in the shared segment.
//
// Nothing here is serialised by Renode's Save: the adapter detaches the probes around a Save.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.IO.MemoryMappedFiles;
using System.Linq;
using System.Text;
using System.Threading;
using Antmicro.Renode.Core;
using Antmicro.Renode.Exceptions;
using Antmicro.Renode.Peripherals.Bus;
using Antmicro.Renode.Peripherals.CPU;
using Antmicro.Renode.Peripherals.UART;
using Antmicro.Renode.Time;

namespace Antmicro.Renode.Peripherals.Virsim
{
    // ------------------------------------------------------------------------------- the clock

    // A machine's virtual time in cycles of the node's clock, to the block: Renode advances the
    // machine's clock when the CPU reports a slice it executed, so inside a slice the time is the
    // clock at the slice's start plus the instructions executed since (one a cycle at
    // PerformanceInMips = the board's MHz).
    public class NodeClock
    {
        public NodeClock(IMachine machine, ulong hz)
        {
            this.machine = machine;
            this.hz = hz;
            cpu = machine.SystemBus.GetCPUs().First();
            Mark(TimeInterval.Empty);
            machine.LocalTimeSource.TimePassed += Mark;  // after the machine's own handler: its clock has moved
        }

        public void Dispose()
        {
            machine.LocalTimeSource.TimePassed -= Mark;
        }

        // `instructions`: the CPU's count at the moment in question (a block's first instruction).
        public ulong Cycles(ulong instructions)
        {
            return (ulong)((decimal)sliceClock * hz / 1000000000m) + (instructions - sliceInstructions);
        }

        public ulong Now()
        {
            return Cycles(cpu.ExecutedInstructions);
        }

        private void Mark(TimeInterval passed)
        {
            sliceClock = machine.ClockSource.CurrentValue.Ticks;
            sliceInstructions = cpu.ExecutedInstructions;
        }

        private ulong sliceClock;
        private ulong sliceInstructions;
        private readonly ulong hz;
        private readonly ICPU cpu;
        private readonly IMachine machine;
    }

    // ------------------------------------------------------------------------------------ probes

    public class Probes
    {
        public Probes(string machineName)
        {
            MachineName = machineName;
        }

        public string MachineName { get; }

        public void Attach(TranslationCPU cpu, ulong hz)
        {
            if(!ReferenceEquals(cpu, this.cpu))
            {
                hooked = false;  // a Load made a new CPU: it has no hook yet
            }
            this.cpu = cpu;
            clock?.Dispose();
            clock = new NodeClock(cpu.GetMachine(), hz);
            Rehook();
        }

        // Around a Save: nothing of virsim's may be reachable from the emulation (it would be serialised).
        public void Detach()
        {
            if(cpu != null && hooked)
            {
                cpu.SetHookAtBlockEnd(null);
            }
            hooked = false;
            clock?.Dispose();
            clock = null;
        }

        public void Rehook()
        {
            var want = counting || tracing;
            if(cpu == null || want == hooked)
            {
                return;
            }
            cpu.SetHookAtBlockEnd(want ? (Action<ulong, uint>)OnBlock : null);
            hooked = want;
        }

        // ---- coverage
        public bool Counting { get { return counting; } set { counting = value; Rehook(); } }

        public void ResetCounts()
        {
            counts.Clear();
        }

        public int DumpCoverage(string path)
        {
            var text = new StringBuilder();
            foreach(var entry in counts.OrderBy(e => e.Key))
            {
                var pc = entry.Key >> 12;
                var n = (uint)(entry.Key & 0xFFF);
                text.AppendFormat(CultureInfo.InvariantCulture, "{0} {1} {2} {3}\n", pc, BlockBytes(pc, n), n, entry.Value);
            }
            File.WriteAllText(path, text.ToString());
            return counts.Count;
        }

        // ---- trace
        public void StartTrace(string level, ulong limit, List<Tuple<ulong, ulong>> ranges, ulong[] functions)
        {
            if(level != "block" && level != "instruction" && level != "function")
            {
                throw new RecoverableException($"trace level {level}: one of block, instruction, function");
            }
            this.level = level;
            this.limit = Math.Max(limit, 1);
            this.ranges = ranges;
            this.functions = functions.OrderBy(f => f).ToArray();
            lastFunction = -2;
            events = new List<ulong>();
            truncated = false;
            tracing = true;
            Rehook();
        }

        public void StopTrace()
        {
            tracing = false;
            Rehook();
        }

        public string TraceInfo()
        {
            var n = events == null ? 0 : events.Count / 3;
            return $"level={level} events={n} truncated={(truncated ? 1 : 0)} limit={limit} active={(tracing ? 1 : 0)}";
        }

        public void DumpTrace(string path)
        {
            using(var f = new BinaryWriter(File.Open(path, FileMode.Create)))
            {
                if(events != null)
                {
                    for(var i = 0; i + 2 < events.Count; i += 3)
                    {
                        f.Write(events[i]);
                        f.Write((uint)events[i + 1]);
                        f.Write((uint)events[i + 2]);
                    }
                }
            }
        }

        // ---- the hook
        private void OnBlock(ulong pc, uint n)
        {
            // tlib reports 0 for a block interrupted before its first instruction, and uint.MaxValue
            // where it could not count (an exception left the block): nothing to attribute.
            if(n == 0 || n >= 0xFFF)
            {
                return;
            }
            if(counting)
            {
                var key = (pc << 12) | n;
                ulong seen;
                counts.TryGetValue(key, out seen);
                counts[key] = seen + 1;
            }
            if(tracing)
            {
                Record(pc, n);
            }
        }

        // The virtual time of the block's first instruction (the CPU counts a block's instructions as it enters it).
        private ulong BlockCycle(uint n)
        {
            return clock.Cycles(cpu.ExecutedInstructions - n);
        }

        private void Record(ulong pc, uint n)
        {
            if(events.Count >= 3 * (long)limit)
            {
                truncated = true;
                tracing = false;
                return;
            }
            var cycle = BlockCycle(n);
            if(level == "instruction")
            {
                var address = pc;
                foreach(var size in InstructionSizes(pc, n))
                {
                    if(InRange(address) && events.Count < 3 * (long)limit)
                    {
                        events.Add(cycle);
                        events.Add(address);
                        events.Add(size);
                    }
                    cycle++;
                    address += size;
                }
                return;
            }
            if(!InRange(pc))
            {
                return;
            }
            if(level == "function")
            {
                var index = Array.BinarySearch(functions, pc);
                var entry = index >= 0;
                if(!entry)
                {
                    index = ~index - 1;
                }
                if(index == lastFunction && !entry)
                {
                    return;  // still in the same function: not a call or a return
                }
                lastFunction = index;
            }
            events.Add(cycle);
            events.Add(pc);
            events.Add(BlockBytes(pc, n));
        }

        private bool InRange(ulong address)
        {
            if(ranges == null || ranges.Count == 0)
            {
                return true;
            }
            foreach(var r in ranges)
            {
                if(address >= r.Item1 && address < r.Item2)
                {
                    return true;
                }
            }
            return false;
        }

        // Thumb: a halfword whose top five bits are 0b11101, 0b11110 or 0b11111 starts a 32-bit instruction.
        private uint[] InstructionSizes(ulong pc, uint n)
        {
            var key = (pc << 12) | n;
            uint[] sizes;
            if(sizeCache.TryGetValue(key, out sizes))
            {
                return sizes;
            }
            sizes = new uint[n];
            var address = pc;
            for(var i = 0; i < n; i++)
            {
                var half = cpu.GetMachine().SystemBus.ReadWord(address, cpu);
                sizes[i] = (half >> 11) >= 0x1D ? 4u : 2u;
                address += sizes[i];
            }
            sizeCache[key] = sizes;
            return sizes;
        }

        private uint BlockBytes(ulong pc, uint n)
        {
            uint total = 0;
            foreach(var s in InstructionSizes(pc, n))
            {
                total += s;
            }
            return total;
        }

        private TranslationCPU cpu;
        private NodeClock clock;
        private bool hooked;
        private bool counting;
        private bool tracing;
        private string level = "block";
        private ulong limit = 1;
        private bool truncated;
        private List<Tuple<ulong, ulong>> ranges;
        private ulong[] functions = new ulong[0];
        private int lastFunction = -2;
        private List<ulong> events;
        private readonly Dictionary<ulong, ulong> counts = new Dictionary<ulong, ulong>();
        private readonly Dictionary<ulong, uint[]> sizeCache = new Dictionary<ulong, uint[]>();
    }

    public static class VirsimProbesExtensions
    {
        // Coverage: "start" | "stop" | "reset" | "dump" (to `path`: a line "start bytes instructions
        // count" per block) | "detach" / "attach" (around a Save or Load: the hook off / on again).
        public static string VirsimCoverage(this TranslationCPU cpu, string action, string path = "", ulong hz = 0)
        {
            var probes = For(cpu, hz);
            switch(action)
            {
            case "start": probes.Counting = true; return "counting";
            case "stop": probes.Counting = false; return "stopped";
            case "reset": probes.ResetCounts(); return "reset";
            case "dump": return $"blocks={probes.DumpCoverage(path)}";
            case "detach": probes.Detach(); return "detached";
            case "attach": probes.Attach(cpu, hz == 0 ? 1000000 : hz); return "attached";
            default: throw new RecoverableException($"VirsimCoverage: unknown action {action}");
            }
        }

        // Traces: "start" (level block|instruction|function, limit, ranges "lo-hi,lo-hi" in decimal,
        // `path`: a file of function start addresses, one decimal number a line) | "stop" | "info"
        // | "dump" (to `path`: records <QII cycle, address, size).
        public static string VirsimTrace(this TranslationCPU cpu, string action, string level = "block", ulong limit = 1,
                                         string ranges = "", string path = "", ulong hz = 0)
        {
            var probes = For(cpu, hz);
            switch(action)
            {
            case "start":
                var parsed = new List<Tuple<ulong, ulong>>();
                foreach(var part in ranges.Split(new[] { ',' }, StringSplitOptions.RemoveEmptyEntries))
                {
                    var bounds = part.Split('-');
                    parsed.Add(Tuple.Create(ulong.Parse(bounds[0], CultureInfo.InvariantCulture),
                                            ulong.Parse(bounds[1], CultureInfo.InvariantCulture)));
                }
                var functions = path == "" ? new ulong[0] : File.ReadAllLines(path).Where(l => l.Trim() != "")
                    .Select(l => ulong.Parse(l.Trim(), CultureInfo.InvariantCulture)).ToArray();
                probes.StartTrace(level, limit, parsed, functions);
                return probes.TraceInfo();
            case "stop": probes.StopTrace(); return probes.TraceInfo();
            case "info": return probes.TraceInfo();
            case "dump": probes.DumpTrace(path); return probes.TraceInfo();
            default: throw new RecoverableException($"VirsimTrace: unknown action {action}");
            }
        }

        private static Probes For(TranslationCPU cpu, ulong hz)
        {
            string name;
            if(!EmulationManager.Instance.CurrentEmulation.TryGetMachineName(cpu.GetMachine(), out name))
            {
                throw new RecoverableException("VirsimProbes: the CPU belongs to no machine of this emulation");
            }
            lock(all)
            {
                Probes probes;
                if(!all.TryGetValue(name, out probes))
                {
                    probes = new Probes(name);
                    all[name] = probes;
                    probes.Attach(cpu, hz == 0 ? 1000000 : hz);
                }
                return probes;
            }
        }

        private static readonly Dictionary<string, Probes> all = new Dictionary<string, Probes>();
    }

    // ----------------------------------------------------------------------------- shared memory

    // A region of a file mapped into the bus: every access reads or writes the file's bytes, so
    // another process mapping the same file (a built-in or QEMU node, another Renode machine) sees
    // a write at once, as real shared memory. Reset leaves the contents alone: they are shared.
    public class SharedMemory : IBytePeripheral, IWordPeripheral, IDoubleWordPeripheral, IKnownSize, IDisposable
    {
        public SharedMemory(string path, long size, long offset = 0)
        {
            this.path = path;
            Size = size;
            file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.ReadWrite);
            view = file.CreateViewAccessor(offset, size, MemoryMappedFileAccess.ReadWrite);
        }

        public long Size { get; }

        public byte ReadByte(long offset) { return view.ReadByte(offset); }
        public ushort ReadWord(long offset) { return view.ReadUInt16(offset); }
        public uint ReadDoubleWord(long offset) { return view.ReadUInt32(offset); }
        public void WriteByte(long offset, byte value) { view.Write(offset, value); }
        public void WriteWord(long offset, ushort value) { view.Write(offset, value); }
        public void WriteDoubleWord(long offset, uint value) { view.Write(offset, value); }

        public void Reset()
        {
        }

        public void Dispose()
        {
            view.Dispose();
            file.Dispose();
        }

        public override string ToString()
        {
            return $"virsim shared memory {path}";
        }

        private readonly string path;
        private readonly MemoryMappedFile file;
        private readonly MemoryMappedViewAccessor view;
    }

    // --------------------------------------------------------------------------------- lockstep

    // One Renode node's part in the barrier: what it sends (GPIO edges, UART bytes), what it
    // receives, its console timeline, its slot in the segment.
    public class LockstepNode
    {
        public int Index;
        public string Name;
        public IMachine Machine;
        public ulong Hz;
        public FileStream Timeline;
        public FileStream Console;
        public readonly Dictionary<int, IUART> UartSlots = new Dictionary<int, IUART>();
        public readonly Dictionary<int, bool> IrqLevels = new Dictionary<int, bool>();
        public IGPIOReceiver Nvic;
        public NodeClock Clock;
        public readonly List<ulong[]> Outgoing = new List<ulong[]>();  // cycle, target, kind, a, b

        public ulong Now()
        {
            return Clock.Now();
        }
    }

    // The segment's layout is lockstep.py's (the docstring there is the reference).
    public class Lockstep
    {
        public Lockstep(string segment, long maxQuantum)
        {
            file = MemoryMappedFile.CreateFromFile(segment, FileMode.Open, null, 0, MemoryMappedFileAccess.ReadWrite);
            mem = file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.ReadWrite);
            var magic = new byte[8];
            mem.ReadArray(0, magic, 0, 8);
            if(Encoding.ASCII.GetString(magic) != "VSYNC001")
            {
                throw new RecoverableException($"{segment} is not a virsim lockstep segment");
            }
            nodes = (int)mem.ReadUInt32(8);
            maxEvents = (int)mem.ReadUInt32(12);
            quantum = mem.ReadUInt64(16);
            currentQuantum = quantum;
            this.maxQuantum = (ulong)maxQuantum;
            nodeSize = SlotSize + 2 * (CountSize + maxEvents * EventSize);
        }

        public readonly List<LockstepNode> Members = new List<LockstepNode>();
        public ulong Quantum { get { return quantum; } }
        public ulong MinHz = ulong.MaxValue;
        public bool RunningFree;
        public ulong Quanta;

        public void Start(Emulation emulation)
        {
            this.emulation = emulation;
            // The emulation's quantum is the barrier's: Renode synchronises its machines exactly where
            // the other nodes meet.
            SetQuantum(quantum);
            targetNs = QuantumNs(quantum);
            emulation.MasterTimeSource.SyncHook += OnSync;
        }

        private ulong QuantumNs(ulong cycles)
        {
            return cycles * 1000000000UL / MinHz;
        }

        private void SetQuantum(ulong cycles)
        {
            var interval = TimeInterval.FromNanoseconds(QuantumNs(cycles));
            emulation.MasterTimeSource.Quantum = interval;
            foreach(var m in Members)
            {
                m.Machine.LocalTimeSource.Quantum = interval;
            }
        }

        public void Stop()
        {
            if(emulation != null)
            {
                emulation.MasterTimeSource.SyncHook -= OnSync;
            }
            RunningFree = true;
            foreach(var m in Members)
            {
                m.Timeline.Flush();
                m.Console.Flush();
            }
        }

        private long Slot(int node) { return HeaderSize + (long)node * nodeSize; }
        private long Outbox(int node, ulong q) { return Slot(node) + SlotSize + (long)(q & 1) * (CountSize + maxEvents * EventSize); }
        private uint Command() { return mem.ReadUInt32(HeaderCommand); }

        // A synchronisation point of the emulation: every Renode node has run the quantum.
        private void OnSync(TimeInterval elapsed)
        {
            // Renode also synchronises where no quantum ends (at time 0 as it starts, say): only the
            // quantum's end is a barrier.
            if(RunningFree || elapsed.Ticks < targetNs)
            {
                return;
            }
            var q = Quanta;
            foreach(var m in Members)
            {
                m.Timeline.Flush();  // before `arrived`: a line that starts before the horizon is in the file
                m.Console.Flush();
                var box = Outbox(m.Index, q);
                var count = Math.Min(m.Outgoing.Count, maxEvents);
                for(var i = 0; i < count; i++)
                {
                    var e = m.Outgoing[i];
                    var at = box + CountSize + i * EventSize;
                    mem.Write(at, e[0]);
                    mem.Write(at + 8, (ushort)m.Index);
                    mem.Write(at + 10, (ushort)e[1]);
                    mem.Write(at + 12, (ushort)e[2]);
                    mem.Write(at + 14, (ushort)0);
                    mem.Write(at + 16, (uint)e[3]);
                    mem.Write(at + 20, (uint)e[4]);
                }
                m.Outgoing.RemoveRange(0, count);  // more than an outbox holds: the rest next quantum
                mem.Write(box, (uint)count);
                mem.Write(box + 4, (uint)0);
                var reached = (ulong)((decimal)elapsed.Ticks * m.Hz / 1000000000m);
                mem.Write(Slot(m.Index) + 16, reached);
                mem.Write(Slot(m.Index) + 24 + 24, m.Machine.SystemBus.GetCPUs().OfType<ICPU>().First().ExecutedInstructions);
                Thread.MemoryBarrier();
                mem.Write(Slot(m.Index), q + 1);  // publish: the outbox is complete
            }
            if(!Wait(q + 1))
            {
                Stop();
                return;
            }
            Quanta = q + 1;
            ulong traffic = 0;
            var inbox = new List<Tuple<ulong, int, int, int, uint, uint>>();  // cycle, source, seq, kind, a, b + target
            var targets = new List<int>();
            for(var n = 0; n < nodes; n++)
            {
                var box = Outbox(n, q);
                var count = mem.ReadUInt32(box);
                traffic += count;
                for(var i = 0; i < count; i++)
                {
                    var at = box + CountSize + i * EventSize;
                    var target = mem.ReadUInt16(at + 10);
                    if(Members.Any(m => m.Index == target))
                    {
                        inbox.Add(Tuple.Create(mem.ReadUInt64(at), n, i, (int)mem.ReadUInt16(at + 12), mem.ReadUInt32(at + 16),
                                               mem.ReadUInt32(at + 20)));
                        targets.Add(target);
                    }
                }
            }
            var order = Enumerable.Range(0, inbox.Count).OrderBy(i => inbox[i].Item1).ThenBy(i => inbox[i].Item2)
                .ThenBy(i => inbox[i].Item3).ToList();
            foreach(var i in order)
            {
                var m = Members.First(x => x.Index == targets[i]);
                var ev = inbox[i];
                var kind = ev.Item4 & 0xFF;
                if(kind == KindIrq && m.Nvic != null)
                {
                    m.Nvic.OnGPIO((int)ev.Item5, ev.Item6 != 0);
                }
                else if(kind == KindUart && m.UartSlots.ContainsKey((int)ev.Item5))
                {
                    m.UartSlots[(int)ev.Item5].WriteChar((byte)ev.Item6);
                }
            }
            if(maxQuantum != 0)
            {
                // Event mode: the same doubling rule as every other node (engine.py _next_quantum).
                currentQuantum = traffic != 0 ? quantum : Math.Min(currentQuantum * 2, maxQuantum);
                SetQuantum(currentQuantum);
            }
            targetNs += QuantumNs(currentQuantum);
        }

        // Until every node arrived (and the command is not PAUSE); false once STOP is seen.
        private bool Wait(ulong want)
        {
            var spins = 0;
            var started = DateTime.UtcNow;
            while(true)
            {
                var command = Command();
                if(command == CommandStop)
                {
                    return false;
                }
                var all = true;
                for(var n = 0; n < nodes && all; n++)
                {
                    if(mem.ReadUInt64(Slot(n)) < want)
                    {
                        all = false;
                    }
                }
                if(all && command != CommandPause)
                {
                    break;
                }
                spins++;
                if(spins < 2000)
                {
                    continue;
                }
                if(spins < 4000)
                {
                    Thread.Yield();
                }
                else
                {
                    Thread.Sleep(0);
                    Thread.SpinWait(1);
                    Thread.Sleep(1);
                }
            }
            if(spins > 0)
            {
                var waited = (ulong)((DateTime.UtcNow - started).Ticks * 100);  // ns; every node here waited
                foreach(var m in Members)
                {
                    var at = Slot(m.Index) + 24 + 16;
                    mem.Write(at, mem.ReadUInt64(at) + waited);
                }
            }
            return true;
        }

        private Emulation emulation;
        private ulong targetNs;  // the virtual time of the next barrier
        private ulong currentQuantum;
        private readonly ulong maxQuantum;
        private readonly ulong quantum;
        private readonly int nodes;
        private readonly int maxEvents;
        private readonly long nodeSize;
        private readonly MemoryMappedFile file;
        private readonly MemoryMappedViewAccessor mem;

        private const long HeaderSize = 64;
        private const long HeaderCommand = 8 + 4 + 4 + 8;
        private const long SlotSize = 64;
        private const long CountSize = 8;
        private const long EventSize = 24;
        private const uint CommandStop = 1;
        private const uint CommandPause = 2;
        public const int KindIrq = 1;
        public const int KindUart = 2;
    }

    public static class VirsimLockstepExtensions
    {
        // Join the barrier with this emulation's machines, as the config file says (lines, fields
        // separated by single spaces; virsim/backends/renode/system.py writes it):
        //   segment PATH MAX_QUANTUM
        //   node INDEX MACHINE HZ TIMELINE CONSOLE_LOG [CONSOLE_UART]
        //   slot INDEX SLOT UART            (incoming UART events for slot SLOT go to UART)
        //   nvic INDEX NVIC
        //   irq INDEX GPIO PIN TARGET LINE  (a GPIO output pin raises LINE on node TARGET)
        //   uart INDEX UART TARGET SLOT     (what UART transmits arrives at TARGET's SLOT)
        public static string VirsimLockstep(this Emulation emulation, string config)
        {
            if(current != null)
            {
                throw new RecoverableException("this emulation is already in a lockstep");
            }
            var lines = File.ReadAllLines(config).Select(l => l.Split(' ')).Where(p => p.Length > 1).ToList();
            var seg = lines.First(p => p[0] == "segment");
            var lockstep = new Lockstep(seg[1], long.Parse(seg[2], CultureInfo.InvariantCulture));
            foreach(var p in lines.Where(p => p[0] == "node"))
            {
                IMachine machine;
                if(!emulation.TryGetMachineByName(p[2], out machine))
                {
                    throw new RecoverableException($"no machine {p[2]}");
                }
                var node = new LockstepNode
                {
                    Index = int.Parse(p[1], CultureInfo.InvariantCulture),
                    Name = p[2],
                    Machine = machine,
                    Hz = ulong.Parse(p[3], CultureInfo.InvariantCulture),
                    Timeline = new FileStream(p[4], FileMode.Append, FileAccess.Write),
                    Console = new FileStream(p[5], FileMode.Append, FileAccess.Write),
                };
                node.Clock = new NodeClock(machine, node.Hz);
                lockstep.MinHz = Math.Min(lockstep.MinHz, node.Hz);
                lockstep.Members.Add(node);
                if(p.Length > 6)
                {
                    var uart = Find<IUART>(machine, p[6]);
                    uart.CharReceived += b =>
                    {
                        var cycle = node.Now();
                        var record = new byte[11];
                        BitConverter.GetBytes(cycle).CopyTo(record, 0);
                        BitConverter.GetBytes((ushort)1).CopyTo(record, 8);
                        record[10] = b;
                        node.Timeline.Write(record, 0, record.Length);
                        node.Console.WriteByte(b);
                    };
                }
            }
            foreach(var p in lines)
            {
                if(p[0] == "segment" || p[0] == "node")
                {
                    continue;
                }
                var node = lockstep.Members.First(m => m.Index == int.Parse(p[1], CultureInfo.InvariantCulture));
                switch(p[0])
                {
                case "slot":
                    node.UartSlots[int.Parse(p[2], CultureInfo.InvariantCulture)] = Find<IUART>(node.Machine, p[3]);
                    break;
                case "nvic":
                    node.Nvic = Find<IGPIOReceiver>(node.Machine, p[2]);
                    break;
                case "irq":
                {
                    var gpio = Find<INumberedGPIOOutput>(node.Machine, p[2]);
                    var pin = int.Parse(p[3], CultureInfo.InvariantCulture);
                    var target = ulong.Parse(p[4], CultureInfo.InvariantCulture);
                    var line = int.Parse(p[5], CultureInfo.InvariantCulture);
                    var pins = pin >= 0 ? new[] { pin } : gpio.Connections.Keys.ToArray();
                    foreach(var k in pins)
                    {
                        var hooks = gpio.Connections[k] as IGPIOWithHooks;
                        if(hooks == null)
                        {
                            throw new RecoverableException($"{p[2]} pin {k} cannot be watched");
                        }
                        hooks.AddStateChangedHook(level =>
                        {
                            // pin -1: the line follows "any output pin high"
                            var value = pin >= 0 ? level : pins.Any(x => gpio.Connections[x].IsSet);
                            bool before;
                            if(node.IrqLevels.TryGetValue(line * 65536 + (int)target, out before) && before == value)
                            {
                                return;
                            }
                            node.IrqLevels[line * 65536 + (int)target] = value;
                            node.Outgoing.Add(new[] { node.Now(), target, (ulong)Lockstep.KindIrq, (ulong)line, value ? 1UL : 0UL });
                        });
                    }
                    break;
                }
                case "uart":
                {
                    var uart = Find<IUART>(node.Machine, p[2]);
                    var target = ulong.Parse(p[3], CultureInfo.InvariantCulture);
                    var slot = ulong.Parse(p[4], CultureInfo.InvariantCulture);
                    uart.CharReceived += b => node.Outgoing.Add(new[] { node.Now(), target, (ulong)Lockstep.KindUart, slot, (ulong)b });
                    break;
                }
                default:
                    throw new RecoverableException($"VirsimLockstep: unknown config line {string.Join(" ", p)}");
                }
            }
            lockstep.Start(emulation);
            current = lockstep;
            return $"nodes={lockstep.Members.Count} quantum={lockstep.Quantum}";
        }

        // Console input for a node of the lockstep: bytes (hex) into its UART's receiver, at once.
        public static string VirsimInput(this Emulation emulation, string machineName, string uartName, string hex)
        {
            IMachine machine;
            if(!emulation.TryGetMachineByName(machineName, out machine))
            {
                throw new RecoverableException($"no machine {machineName}");
            }
            var uart = Find<IUART>(machine, uartName);
            for(var i = 0; i + 1 < hex.Length; i += 2)
            {
                uart.WriteChar(byte.Parse(hex.Substring(i, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
            }
            return $"sent={hex.Length / 2}";
        }

        public static string VirsimLockstepInfo(this Emulation emulation)
        {
            return current == null ? "none" : $"quanta={current.Quanta} free={(current.RunningFree ? 1 : 0)}";
        }

        private static T Find<T>(IMachine machine, string name) where T : class, IPeripheral
        {
            T found;
            if(!machine.TryGetByName(name, out found))
            {
                throw new RecoverableException($"no peripheral {name} of type {typeof(T).Name}");
            }
            return found;
        }

        private static Lockstep current;
    }
}
