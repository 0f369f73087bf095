#!/usr/bin/perl
# Reads server log lines (log_line_prefix '%m [%p] %b %u@%d %a: ', as tests/search_path.sh sets
# it) on stdin and prints, per shadow that fired and session kind (database, backend type, user,
# application), how many times, and the statements it fired on (the one the server logged with
# the shadow's ERROR; when the wallet caught that ERROR, nothing is logged, and it says so).
use strict;
use warnings;

my (%pending, %count, %statements, @order);
my $caught = '(none logged: the wallet caught the ERROR)';

sub emit {
    my ($pid, $statement) = @_;
    my $p = delete $pending{$pid} or return;
    my $key = "$p->{label}\n        in: $p->{where}";
    push @order, $key unless $count{$key}++;
    push @{ $statements{$key} }, $statement
        unless grep { $_ eq $statement } @{ $statements{$key} || [] };
}

while (my $line = <STDIN>) {
    chomp $line;
    next unless $line =~ /^\S+ \S+ \S+ \[(\d+)\] (.*?) (\S*)@(\S*) (.*?): ([A-Z]+):  (.*)$/;
    my ($pid, $backend, $user, $db, $app, $level, $msg) = ($1, $2, $3, $4, $5, $6, $7);
    if ($level eq 'WARNING' && $msg =~ /^SH001 shadow fired: (.*) \(in database \S+, as \S+\)$/) {
        emit($pid, $caught);
        my $where = "database $db, $backend, user $user" . ($app ne '' ? ", application '$app'" : '');
        $pending{$pid} = { label => $1, where => $where };
    } elsif ($level eq 'STATEMENT' && $pending{$pid}) {
        emit($pid, $msg);
    }
}
emit($_, $caught) for sort keys %pending;
for my $key (@order) {
    my @s = @{ $statements{$key} };
    printf "%5d x %s\n        on %d statement(s), e.g.:\n", $count{$key}, $key, scalar @s;
    printf "          %s\n", $_ for @s[0 .. ($#s < 2 ? $#s : 2)];
}
